"""Offline tests of tests/support: polling helper, XML builders against libvirt's schema."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree
from support import busybox_lxc_xml, cleanup_domains, guest_qemu_xml, wait_for

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")


def test_wait_for_returns_the_first_truthy_value():
    calls = iter([None, 0, "ready"])
    assert wait_for(lambda: next(calls), timeout=5, what="x", interval=0) == "ready"


def test_wait_for_names_what_it_waited_for_on_timeout():
    def failing():
        raise OSError("boom")

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waiting for the marker \(last: OSError\('boom'\)"):
        wait_for(failing, timeout=0.3, what="the marker", interval=0.05)
    assert 0.3 <= time.monotonic() - t0 < 2


def test_cleanup_refuses_an_empty_prefix():
    with pytest.raises(ValueError, match="non-empty prefix"):
        cleanup_domains(object(), "")


@pytest.mark.parametrize(
    "xml",
    [
        busybox_lxc_xml("vmixt-infra-x", Path("/var/tmp/x")),
        busybox_lxc_xml("vmixt-infra-x", Path("/var/tmp/x"), idmap_base=100000),
        busybox_lxc_xml("vmixt-infra-x", Path("/var/tmp/x"), privnet=False),
        guest_qemu_xml("vmixt-infra-g", Path("/k"), Path("/i"), Path("/l"), cmdline_extra="a"),
    ],
    ids=["lxc", "lxc-idmap", "lxc-hostnet", "qemu"],
)
def test_builders_produce_schema_valid_domains(xml):
    schema = etree.RelaxNG(etree.parse(str(DOMAIN_RNG)))
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log


def test_second_host_names_its_files_here(tmp_path):
    """A path on the second host is a file under its root here when its dir is bound."""
    import subprocess

    from support.second_host import SecondHost

    proc = subprocess.Popen(["true"])
    proc.wait()
    host = SecondHost("h", tmp_path, 1, proc, {"/var/lib/virtmix": tmp_path / "p-store",
                                               "/var/lib/virtmix/x": tmp_path / "inner"})
    assert host.here("/var/lib/virtmix/guests/g/root.qcow2") == \
        tmp_path / "p-store/guests/g/root.qcow2"
    assert host.here("/var/lib/virtmix/x/y") == tmp_path / "inner/y"  # the deepest bind
    with pytest.raises(ValueError, match="not bound"):
        host.here("/var/lib/virtmixer/a")
    assert host.ssh_uri.startswith("qemu+ssh://root@127.0.0.1:1/system?command=")
