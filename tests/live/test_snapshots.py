"""snapshot / backup / restore against the real libvirtd: containers on trees, a QEMU guest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
from support import GuestKernel, wait_for

pytestmark = pytest.mark.live
SNAP_PFX = PFX + "snap-"
# An init that ends on what destroy sends it (SIGPWR, as to busybox init): a bare
# `sh -c` as pid 1 ignores it, and destroy then waited its whole timeout (30 s) before
# forcing the container off. `sleep & wait` lets the trap run at once.
SLEEP = ["/bin/sh", "-c", "trap 'exit 0' PWR TERM; sleep infinity & wait"]


@pytest.fixture
def storage(lxc_conn, qemu_conn, domain_cleanup):
    domain_cleanup(lxc_conn, SNAP_PFX)
    domain_cleanup(qemu_conn, SNAP_PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def _site(storage: Path, make_busybox_tree, names: list[str]) -> tuple[str, dict[str, Path]]:
    trees = {n: make_busybox_tree() for n in names}
    inv = write_inventory(storage, {"h1": lxc_host(
        {n: busybox(t, init=SLEEP) for n, t in trees.items()})}, name=SNAP_PFX + "site")
    virtmix("apply", str(inv), "--yes", check=0)
    return str(inv), trees


def _state(conn, name: str) -> int:
    return conn.lookupByName(name).state()[0]


def test_container_snapshot_restore_and_rm(lxc_conn, storage, make_busybox_tree):
    name = SNAP_PFX + "one"
    _inv, trees = _site(storage, make_busybox_tree, [name])
    tree = trees[name]
    (tree / "root" / "before").write_text("kept\n")

    res = virtmix("snapshot", name, "--name", "s1", check=0)
    assert f"{name}: snapshot s1 taken" in res.stdout
    snapdir = storage / "snapshots" / name / "s1"
    assert (snapdir / "data" / "root" / "before").read_text() == "kept\n"
    assert oct(snapdir.parent.stat().st_mode & 0o777) == "0o700"
    rows = json.loads(virtmix("snapshot", "ls", name, "-o", "json", check=0).stdout)
    assert [(r["domain"], r["snapshot"], r["state"]) for r in rows] == [(name, "s1", "running")]
    assert _state(lxc_conn, name) == 1  # thawed again

    virtmix("snapshot", name, "--name", "s1", check=9)  # that name is taken
    (tree / "root" / "before").unlink()
    (tree / "root" / "after").write_text("lost\n")
    res = virtmix("snapshot", "restore", name, "s1", check=0)
    assert f"{name}: restored to s1" in res.stdout
    assert (tree / "root" / "before").read_text() == "kept\n"
    assert not (tree / "root" / "after").exists()
    assert _state(lxc_conn, name) == 1  # running, as when it was taken
    assert not list(tree.parent.glob(".*restore*")) and not list(tree.parent.glob(".*old*"))

    virtmix("snapshot", "restore", name, "--name", "nope", check=6)
    virtmix("snapshot", "rm", name, "s1", check=0)
    assert not snapdir.exists()
    assert json.loads(virtmix("snapshot", "ls", name, "-o", "json", check=0).stdout) == []
    virtmix("snapshot", "nosuch-domain-x", check=6)


def test_site_snapshot_takes_every_member_and_restores_them(lxc_conn, storage,
                                                            make_busybox_tree):
    names = [SNAP_PFX + f"m{i}" for i in range(3)]
    inv, trees = _site(storage, make_busybox_tree, names)
    lxc_conn.lookupByName(names[2]).suspend()  # a frozen member stays frozen
    res = virtmix("snapshot", inv, "--name", "site1", check=0)
    for n in names:
        assert f"{n}: snapshot site1 taken" in res.stdout
        (trees[n] / "marker").write_text(n)
    assert [_state(lxc_conn, n) for n in names] == [1, 1, 3]
    rows = json.loads(virtmix("snapshot", "ls", inv, "-o", "json", check=0).stdout)
    assert sorted((r["domain"], r["state"]) for r in rows) == [
        (names[0], "running"), (names[1], "running"), (names[2], "paused")]
    virtmix("snapshot", "restore", inv, "site1", check=0)
    for n in names:
        assert not (trees[n] / "marker").exists()
    assert [_state(lxc_conn, n) for n in names] == [1, 1, 3]


def test_backup_and_restore_keep_identity(lxc_conn, storage, make_busybox_tree, tmp_path):
    name = SNAP_PFX + "bk"
    inv, trees = _site(storage, make_busybox_tree, [name])
    (trees[name] / "root" / "data").write_text("precious\n")
    uuid = lxc_conn.lookupByName(name).UUIDString()
    res = virtmix("backup", name, "--to", str(tmp_path / "bk"), check=0)
    archive = next((tmp_path / "bk").glob(f"{name}-*.vmxbak.tar"))
    assert f"backed up to {archive}" in res.stdout
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert not list((tmp_path / "bk").glob(".*"))  # no part file, no scratch dir

    virtmix("restore", str(archive), check=9)  # it still exists here
    virtmix("destroy", name, "--yes", check=0)
    shutil.rmtree(trees[name])  # the host lost the tree too
    res = virtmix("restore", str(archive), check=0)
    assert f"{name}: restored on lxc:///system (running)" in res.stdout
    dom = lxc_conn.lookupByName(name)
    assert dom.UUIDString() == uuid and dom.isActive()
    restored = storage / "containers" / name / "rootfs"
    assert (restored / "root" / "data").read_text() == "precious\n"
    assert "virtmix:entry" in dom.XMLDesc(0)  # still the site's entry

    copy = SNAP_PFX + "bk2"
    res = virtmix("restore", str(archive), "--name", copy, check=0)
    assert "not managed by any inventory now" in res.stderr
    assert lxc_conn.lookupByName(copy).UUIDString() != uuid
    virtmix("restore", str(tmp_path / "nothing.tar"), check=6)
    (tmp_path / "junk.tar").write_text("not a tar")
    virtmix("restore", str(tmp_path / "junk.tar"), check=2)


@pytest.mark.slow
def test_guest_snapshot_and_backup(qemu_conn, storage, guest_kernel, tmp_path):
    name = SNAP_PFX + "guest"
    guest = {"memory": "256MiB", "disks": [{"size": "64MiB"}],
             "boot": {"kernel": str(guest_kernel.vmlinuz), "initrd": str(guest_kernel.initrd),
                      "cmdline": "console=ttyS0 panic=-1"}}
    inv = str(write_inventory(storage, {"h1": {
        "uri": "qemu:///system", "lxc_uri": "lxc:///system", "virt_type": "qemu",
        "guests": {name: guest}}}, name=SNAP_PFX + "gsite"))
    virtmix("apply", inv, "--yes", check=0)
    log = storage / "guests" / name / "serial.log"
    wait_for(lambda: log.is_file() and GuestKernel.MARKER in log.read_text(errors="replace"),
             timeout=60, what="the guest's boot marker", interval=0.2)

    virtmix("snapshot", name, "--name", "g1", check=0)
    dom = qemu_conn.lookupByName(name)
    assert [s.getName() for s in dom.listAllSnapshots()] == ["g1"]
    assert dom.state()[0] == 1
    rows = json.loads(virtmix("snapshot", "ls", name, "-o", "json", check=0).stdout)
    assert [(r["snapshot"], r["kind"], r["state"]) for r in rows] == [("g1", "kvm", "running")]
    virtmix("snapshot", "restore", name, "g1", check=0)
    assert qemu_conn.lookupByName(name).state()[0] == 1
    virtmix("snapshot", "rm", name, "g1", check=0)
    assert qemu_conn.lookupByName(name).listAllSnapshots() == []

    res = virtmix("backup", name, "--to", str(tmp_path), check=0)
    archive = next(tmp_path.glob(f"{name}-*.vmxbak.tar"))
    assert "backed up to" in res.stdout
    copy = SNAP_PFX + "guest2"
    virtmix("restore", str(archive), "--name", copy, check=0)
    dom2 = qemu_conn.lookupByName(copy)
    assert dom2.isActive()
    disk = storage / "guests" / copy / "disk0-disk0.qcow2"  # its own, flattened disk
    assert f"<source file='{disk}'" in dom2.XMLDesc(0)
    assert b"backing" not in disk.read_bytes()[:4096]
