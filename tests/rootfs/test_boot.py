"""Clones booted by the real libvirtd: systemd comes up, console login, network, identity."""

from __future__ import annotations

import time
from collections.abc import Iterator

import lxchelp
import pytest

from virtmix.rootfs import InterfaceSetup, ProvisionResult, RootfsSpec

pytestmark = [pytest.mark.live, pytest.mark.slow]
# Only configured on a veth whose host end is attached nowhere: no packet goes anywhere.
CT_ADDR = "10.213.7.10/24"


@pytest.fixture
def boot(lxc) -> Iterator:
    """boot(result, veth=False) -> domain name; destroyed and undefined afterwards."""
    names: list[str] = []

    def start(r: ProvisionResult, veth: bool = False) -> str:
        names.append(r.name)
        lxchelp.destroy_undefine(lxc, r.name)
        dom = lxc.defineXML(lxchelp.domain_xml(r.name, str(r.path), r.idmap, veth=veth))
        dom.create()
        return r.name

    yield start
    for n in names:
        lxchelp.destroy_undefine(lxc, n)


def _assert_up(lxc, name: str) -> str:
    state, waited = lxchelp.wait_running(lxc, name, timeout=60)
    failed = lxchelp.run_inside(lxc, name, "/bin/systemctl", "--failed", "--no-legend",
                                "--plain").stdout
    assert state in ("running", "degraded"), f"{state} after {waited:.1f}s; failed: {failed}"
    return failed


def test_unprivileged_overlay_clone_boots_with_console_and_network(
        make_container, boot, lxc, bookworm_shifted):
    r = make_container("boot", interfaces=(InterfaceSetup("eth0", dhcp=False, ipv4=CT_ADDR),))
    name = boot(r, veth=True)
    failed = _assert_up(lxc, name)
    assert failed.strip() == "", failed
    assert "login:" in lxchelp.console_text(lxc, name, "login:")
    inside = lxchelp.run_inside(lxc, name, "/bin/sh", "-c",
                                "hostname; cat /etc/machine-id /proc/self/uid_map").stdout
    lines = inside.split("\n")
    assert lines[0] == name
    assert lines[1] == (r.path / "etc/machine-id").read_text().strip()
    assert lines[2].split() == ["0", str(r.idmap[1]), "65536"]  # its own range
    # libvirt's FUSE /proc/meminfo (procps cannot read it) was unmounted at boot; the
    # console getty still comes from the getty generator, which stays when the generators a
    # container cannot use are masked.
    mounts = lxchelp.run_inside(lxc, name, "/bin/cat", "/proc/self/mountinfo").stdout
    assert " /proc/meminfo " not in mounts, mounts
    made = lxchelp.run_inside(lxc, name, "/bin/ls", "/run/systemd/generator/getty.target.wants")
    assert "console-getty.service" in made.stdout, made.stdout + made.stderr
    # networkctl needs D-Bus (not in minbase); the kernel's table shows the address.
    addr, fib = CT_ADDR.split("/")[0], ""
    for _ in range(100):  # networkd may still be configuring eth0
        fib = lxchelp.run_inside(lxc, name, "/bin/cat", "/proc/net/fib_trie").stdout
        if addr in fib:
            break
        time.sleep(0.1)
    assert addr in fib, fib


def test_privileged_copy_clone_boots(make_container, boot, lxc, bookworm_base):
    r = make_container("boot-priv", privileged=True, clone="copy")
    name = boot(r)
    _assert_up(lxc, name)
    uid_map = lxchelp.run_inside(lxc, name, "/bin/cat", "/proc/self/uid_map").stdout.split()
    assert uid_map[:2] == ["0", "0"]


def test_trixie_clone_boots(make_container, boot, lxc):
    r = make_container("trixie", RootfsSpec(suite="trixie"))
    name = boot(r)
    _assert_up(lxc, name)
    osrel = lxchelp.run_inside(lxc, name, "/bin/cat", "/etc/os-release").stdout
    assert "trixie" in osrel
    assert "login:" in lxchelp.console_text(lxc, name, "login:")
