"""Verified starts on the real daemon: an init that exits at once is a failure, not "ok"."""

from __future__ import annotations

import pytest
from apply_helpers import (
    PFX,
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)

pytestmark = pytest.mark.live


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_apply_and_start_report_a_container_whose_init_dies(lxc_conn, storage, busybox_tree):
    dead, good = PFX + "dead", PFX + "good"
    inv = str(write_inventory(storage, {"h1": lxc_host({
        dead: busybox(busybox_tree, init=["/bin/false"]),
        good: busybox(busybox_tree)})}))
    res = virtmix("apply", inv, "--yes", check=11)
    assert f"FAILED: container {dead}: container {dead} stopped right after it started" \
        in res.stdout + res.stderr
    assert f"last lines of /var/log/libvirt/lxc/{dead}.log" in res.stdout + res.stderr
    assert "/bin/false" in res.stdout + res.stderr  # the log tail shows what it ran
    assert f"ok: container {good}" in res.stdout + res.stderr
    assert lxc_conn.lookupByName(good).isActive()  # the other entry carried on
    assert not lxc_conn.lookupByName(dead).isActive()

    res = virtmix("start", dead, check=8)
    assert f"{dead} stopped right after it started (state: shutoff)" in res.stderr
    assert "running" not in res.stdout
    # apply again: still not converged, still said so (never a silent "nothing to do")
    virtmix("apply", inv, "--yes", check=11)


def test_start_wait_on_a_busybox_container_says_there_is_no_systemd(lxc_conn, storage,
                                                                   busybox_tree):
    name = PFX + "bbwait"
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree)})}))
    res = virtmix("apply", inv, "--yes", "--wait", check=0)
    assert "is not systemd: nothing to wait for" in res.stdout + res.stderr
    virtmix("stop", name, "--force", check=0)
    res = virtmix("start", name, "--wait", check=0)
    assert f"{name}: running" in res.stdout
