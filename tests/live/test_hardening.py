"""SECURITY.md's untrusted-inventory promises against the real libvirtd: sandboxed user
templates still define and start containers; a hostile template defines nothing; two
spellings of one daemon and dangerous settings are caught before libvirt is touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from apply_helpers import (
    REPO,
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)

pytestmark = pytest.mark.live
PFX = "vmixt-hard-"


def _names(conn) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(PFX))


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def _user_templates(storage: Path, payload: str = "") -> None:
    shutil.copytree(REPO / "domain_templates", storage / "tpl")
    if payload:
        lxc = storage / "tpl" / "lxc.xml.j2"
        lxc.write_text(lxc.read_text().replace("<clock offset='utc'/>",
                                               f"<clock offset='utc'/>{payload}", 1))


def test_sandboxed_user_templates_define_and_start(lxc_conn, storage, busybox_tree):
    name = PFX + "sandboxed"
    _user_templates(storage)
    inv = write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree)})},
                          name="vmixt-hard-site")
    text = inv.read_text()
    inv.write_text("templates_dir: tpl\n" + text)
    virtmix("apply", str(inv), "--yes", check=0)
    dom = lxc_conn.lookupByName(name)
    assert dom.isActive()
    virtmix("destroy", str(inv), "--yes", check=0)
    assert _names(lxc_conn) == []


def test_a_hostile_user_template_defines_nothing(lxc_conn, storage, busybox_tree):
    name = PFX + "hostile"
    _user_templates(storage, "{{ cycler.__init__.__globals__.os.system('touch /tmp/vmixt-x') }}")
    inv = write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree)})},
                          name="vmixt-hard-site")
    inv.write_text("templates_dir: tpl\n" + inv.read_text())
    for verb in (["plan", str(inv)], ["apply", str(inv), "--yes"]):
        res = virtmix(*verb, check=4)
        assert "Traceback" not in res.stderr
    assert _names(lxc_conn) == []
    assert not Path("/tmp/vmixt-x").exists()


def test_two_spellings_of_one_daemon_are_refused_before_libvirt(lxc_conn, storage,
                                                                busybox_tree):
    name = PFX + "twice"
    inv = write_inventory(storage, {
        "a": {**lxc_host({name: busybox(busybox_tree)}), "lxc_uri": "lxc:///"},
        "b": {**lxc_host({name: busybox(busybox_tree)}), "lxc_uri": "LXC:///system"}},
        name="vmixt-hard-site")
    res = virtmix("apply", str(inv), "--yes", check=3)
    assert "hosts.b.containers." + name in res.stderr and "another spelling" in res.stderr
    assert _names(lxc_conn) == []


def test_plan_on_the_daemon_warns_about_a_shared_privileged_tree(lxc_conn, storage,
                                                                 busybox_tree):
    a, b = PFX + "share-a", PFX + "share-b"
    inv = write_inventory(storage, {"h1": lxc_host({a: busybox(busybox_tree),
                                                    b: busybox(busybox_tree)})},
                          name="vmixt-hard-site")
    res = virtmix("plan", str(inv), check=10)
    assert f"privileged containers {a}, {b} share one tree" in res.stderr
    assert "2 to create" in res.stdout
    assert _names(lxc_conn) == []
