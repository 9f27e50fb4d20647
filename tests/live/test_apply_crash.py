"""Interrupted applies converge on the next run: a killed libvirtd, and Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import libvirt
import pytest
from apply_helpers import (
    PFX,
    busybox,
    lxc_host,
    make_storage_dir,
    names_with_prefix,
    remove_storage_dir,
    virtmix,
    virtmix_argv,
    write_inventory,
)
from support import wait_for

from virtmix.util.identity import domain_uuid

pytestmark = pytest.mark.live
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LXC = "lxc:///system"
QEMU = "qemu:///system"


def _open(uri: str) -> libvirt.virConnect:
    libvirt.registerErrorHandler(lambda *_a: None, None)
    return libvirt.open(uri)


def _revive(conn: libvirt.virConnect, uri: str) -> None:
    """Point a session-wide connection object at a fresh connection.

    Killing libvirtd closes every client connection, including the session fixtures that
    later tests use; libvirt-python never reconnects, so the fresh handle is moved into
    the old object (and taken from the new one, so that it is closed only once).
    """
    fresh = libvirt.open(uri)
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
    conn._o, fresh._o = fresh._o, None


def _restart_libvirtd() -> None:
    proc = subprocess.run(["bash", "scripts/setup-host.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_for(lambda: _open(LXC).getLibVersion(), timeout=30, what="libvirtd to answer again")


@pytest.fixture
def storage():
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def _containers(storage, tree, count: int, tag: str) -> tuple[str, list[str]]:
    names = [f"{PFX}{tag}{i:02d}" for i in range(count)]
    inv = write_inventory(storage, {"h1": lxc_host({n: busybox(tree) for n in names})})
    return str(inv), names


def _assert_converged(conn, inv: str, names: list[str]) -> None:
    assert names_with_prefix(conn, names[0][:-2]) == sorted(names)  # no duplicates, no extras
    for n in names:
        dom = conn.lookupByName(n)
        assert dom.isActive(), n
        assert dom.UUIDString() == domain_uuid(LXC, n)
    virtmix("plan", inv, check=0)


@pytest.mark.exclusive  # kills libvirtd: nothing else may use it meanwhile
def test_killed_libvirtd_during_apply_of_20(lxc_conn, qemu_conn, storage, busybox_tree,
                                            domain_cleanup):
    inv, names = _containers(storage, busybox_tree, 20, "kill")
    watcher = _open(LXC)
    domain_cleanup(lxc_conn, PFX + "kill")
    proc = subprocess.Popen(virtmix_argv("apply", inv, "--yes", "--jobs", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(names_with_prefix(watcher, PFX + "kill")) >= 4, timeout=60,
                 what="apply to define its first containers", interval=0.01)
        pid = int(subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True,
                                 text=True).stdout.split()[0])
        os.kill(pid, signal.SIGKILL)
        # setup-host.sh (pgrep) counts a dying or unreaped (zombie) libvirtd as running.
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=60,
                 what=f"killed libvirtd {pid} to exit and be reaped")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(libvirt.libvirtError):
            watcher.close()
        _restart_libvirtd()
        _revive(lxc_conn, LXC)
        _revive(qemu_conn, QEMU)
    assert proc.returncode in (5, 11), out + err
    assert lxc_conn.isAlive() and qemu_conn.getType() == "QEMU"  # revived for later tests
    assert "failed" in err or "cannot connect" in err
    conn = _open(LXC)
    try:
        assert len(names_with_prefix(conn, PFX + "kill")) < 20, "the kill came too late"
        virtmix("apply", inv, "--yes", check=0)
        _assert_converged(conn, inv, names)
        virtmix("destroy", inv, "--yes", check=0)
    finally:
        conn.close()


def test_ctrl_c_stops_cleanly_and_next_apply_converges(lxc_conn, storage, busybox_tree,
                                                       domain_cleanup):
    # 50 entries, one at a time: on a quiet host 20 busybox containers were all applied
    # before the interrupt landed, and the test then proved nothing about stopping.
    inv, names = _containers(storage, busybox_tree, 50, "intr")
    domain_cleanup(lxc_conn, PFX + "intr")
    proc = subprocess.Popen(virtmix_argv("apply", inv, "--yes", "--jobs", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(names_with_prefix(lxc_conn, PFX + "intr")) >= 3, timeout=60,
             what="apply to define its first containers", interval=0.03)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    done = names_with_prefix(lxc_conn, PFX + "intr")
    assert len(done) < len(names), out + err
    # What was started before the interrupt is whole: defined and running.
    assert all(lxc_conn.lookupByName(n).isActive() for n in done)
    t0 = time.monotonic()
    virtmix("apply", inv, "--yes", check=0)
    assert time.monotonic() - t0 < 60
    _assert_converged(lxc_conn, inv, names)
    virtmix("destroy", inv, "--yes", check=0)  # in parallel: faster than the fixture
