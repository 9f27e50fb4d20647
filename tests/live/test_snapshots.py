"""snapshot / backup / restore against the real libvirtd: containers on trees, a QEMU guest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from apply_helpers import (
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)
from support import GuestKernel, wait_for
from test_apply_ssh import loopback_ssh  # noqa: F401 - the second host over ssh

pytestmark = pytest.mark.live
SNAP_PFX = "vmixt-snap-"
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
def test_guest_snapshot_and_backup(qemu_conn, lxc_conn, storage, guest_kernel, tmp_path,
                                   make_busybox_tree):
    name = SNAP_PFX + "guest"
    cname = SNAP_PFX + "beside"
    ctree = make_busybox_tree()
    guest = {"memory": "256MiB", "disks": [{"size": "64MiB"}],
             "boot": {"kernel": str(guest_kernel.vmlinuz), "initrd": str(guest_kernel.initrd),
                      "cmdline": "console=ttyS0 panic=-1"}}
    inv = str(write_inventory(storage, {"h1": {
        "uri": "qemu:///system", "lxc_uri": "lxc:///system", "virt_type": "qemu",
        "guests": {name: guest}, "containers": {cname: busybox(ctree, init=SLEEP)}}},
        name=SNAP_PFX + "gsite"))
    virtmix("apply", inv, "--yes", check=0)
    log = storage / "guests" / name / "serial.log"
    wait_for(lambda: log.is_file() and GuestKernel.MARKER in log.read_text(errors="replace"),
             timeout=60, what="the guest's boot marker", interval=0.2)

    # The site: a guest and a container at one moment (both frozen, both snapshotted).
    res = virtmix("snapshot", inv, "--name", "mix1", check=0)
    assert f"{name}: snapshot mix1 taken" in res.stdout
    assert f"{cname}: snapshot mix1 taken" in res.stdout
    assert "2 domains snapshotted at one moment (frozen for" in res.stdout
    assert qemu_conn.lookupByName(name).state()[0] == 1
    assert lxc_conn.lookupByName(cname).state()[0] == 1
    rows = json.loads(virtmix("snapshot", "ls", inv, "-o", "json", check=0).stdout)
    assert sorted((r["domain"], r["kind"], r["snapshot"], r["state"]) for r in rows) == [
        (cname, "lxc", "mix1", "running"), (name, "kvm", "mix1", "running")]
    (ctree / "after-mix1").write_text("x")
    virtmix("snapshot", "restore", inv, "mix1", check=0)
    assert not (ctree / "after-mix1").exists()
    assert qemu_conn.lookupByName(name).state()[0] == 1
    assert lxc_conn.lookupByName(cname).state()[0] == 1
    virtmix("snapshot", "rm", inv, "mix1", check=0)
    assert qemu_conn.lookupByName(name).listAllSnapshots() == []
    assert not (storage / "snapshots" / cname / "mix1").exists()

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


SNB = "vmixt-snb-"  # the remote-restore test's domains and storage dirs


@pytest.fixture
def snb_storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, SNB)
    made: list[Path] = []

    def make() -> Path:
        made.append(make_storage_dir())
        return made[-1]

    yield make
    for path in made:
        remove_storage_dir(path)


def test_restore_onto_another_host_over_ssh(lxc_conn, snb_storage, make_busybox_tree,
                                            loopback_ssh, tmp_path):  # noqa: F811
    """An archive made on h1 restores on h2, a libvirt host reached over lxc+ssh (this
    machine's libvirtd behind a loopback sshd): streamed over ssh, unpacked there into h2's
    storage, defined through h2's URI with the same UUID and MAC; --new-identity changes
    both."""
    name = SNB + "far"
    here = snb_storage()
    tree = make_busybox_tree()
    (tree / "root" / "data").write_text("travels\n")
    mac = "52:54:00:5e:a1:07"
    net = {SNB + "net": {"host": "h1", "mode": "isolated", "bridge": "vmixtsnb0",
                         "ipv4": "10.213.92.1/24"}}
    inv = write_inventory(here, {"h1": lxc_host({name: busybox(
        tree, init=SLEEP, interfaces=[{"network": SNB + "net", "mac": mac,
                                       "ipv4": "10.213.92.7/24"}])})},
        name=SNB + "site", networks=net)
    virtmix("apply", str(inv), "--yes", check=0)
    uuid = lxc_conn.lookupByName(name).UUIDString()
    virtmix("backup", name, "--to", str(tmp_path), check=0)
    archive = next(tmp_path.glob(f"{name}-*.vmxbak.tar"))
    virtmix("destroy", name, "--yes", check=0)

    there = snb_storage()  # h2's storage_dir: a path only the far side writes to
    uri = loopback_ssh.uri()
    inv2 = write_inventory(there, {"h1": lxc_host({}),
                                   "h2": {"uri": uri, "lxc_uri": uri, "containers": {}}},
                           name=SNB + "site")
    res = virtmix("-i", str(inv2), "--allow-uri-commands", "restore", str(archive),
                  "--host", "h2", check=0)
    assert f"{name}: restored on {uri} (running)" in res.stdout, res.stdout + res.stderr
    assert "must now be under host h2" in res.stderr
    dom = lxc_conn.lookupByName(name)
    assert dom.UUIDString() == uuid and dom.isActive()
    xml = dom.XMLDesc(0)
    assert f"<mac address='{mac}'/>" in xml
    far_tree = there / "containers" / name / "rootfs"
    assert f"<source dir='{far_tree}'/>" in xml
    assert (far_tree / "root" / "data").read_text() == "travels\n"
    assert (far_tree.parent / ".virtmix-container").is_file()
    state = json.loads((far_tree.parent / "state.json").read_text())
    assert state["method"] == "copy" and state["restored_from"] == str(archive)
    assert not list(there.joinpath("containers").glob(".*"))  # no half-unpacked leftovers

    # Once more on h2: the name is taken there (exit 9), nothing is unpacked.
    virtmix("-i", str(inv2), "--allow-uri-commands", "restore", str(archive), "--host", "h2",
            check=9)
    copy = SNB + "far2"
    res = virtmix("-i", str(inv2), "--allow-uri-commands", "restore", str(archive),
                  "--host", "h2", "--name", copy, "--new-identity", check=0)
    dom2 = lxc_conn.lookupByName(copy)
    assert dom2.UUIDString() != uuid and mac not in dom2.XMLDesc(0)
    assert (there / "containers" / copy / "rootfs" / "root" / "data").is_file()
    virtmix("-i", str(inv2), "--allow-uri-commands", "restore", str(archive), "--host",
            "nosuch", check=6)
    for n in (name, copy):
        dom = lxc_conn.lookupByName(n)
        dom.destroy()
        dom.undefine()


SNR = "vmixt-snr-"  # the remote-snapshot test's domains


@pytest.fixture
def snr_storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, SNR)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_snapshots_of_containers_on_a_host_over_ssh(lxc_conn, snr_storage, make_busybox_tree,
                                                    loopback_ssh):  # noqa: F811
    """A site with a container here (h1) and one on h2, a libvirt host reached over lxc+ssh
    (this machine's libvirtd behind a loopback sshd): `snapshot SITE` freezes both through
    their own connections and copies h2's tree there (over ssh); ls, restore and rm work on
    it by name (-i, and -c: the fixture's h2 is this machine's own libvirtd, which h1's
    URI reaches too), and on the site."""
    here, far = SNR + "here", SNR + "far"
    trees = {n: make_busybox_tree() for n in (here, far)}
    uri = loopback_ssh.uri()
    inv = str(write_inventory(snr_storage, {
        "h1": lxc_host({here: busybox(trees[here], init=SLEEP)}),
        "h2": {"uri": uri, "lxc_uri": uri,
               "containers": {far: busybox(trees[far], init=SLEEP)}}}, name=SNR + "site"))
    virtmix("apply", inv, "--yes", "--allow-uri-commands", check=0)
    # One libvirtd behind both hosts' URIs: a name alone is ambiguous, -c picks h2's.
    by_name = ["--allow-uri-commands", "-i", inv, "-c", uri]
    for n in (here, far):
        (trees[n] / "root" / "before").write_text(f"{n} kept\n")

    res = virtmix("--allow-uri-commands", "snapshot", inv, "--name", "s1", check=0)
    print(res.stdout)
    assert f"{far}: snapshot s1 taken" in res.stdout and f" on {uri})" in res.stdout
    assert "2 domains snapshotted at one moment (frozen for" in res.stdout
    for n in (here, far):
        data = snr_storage / "snapshots" / n / "s1" / "data"
        assert (data / "root" / "before").read_text() == f"{n} kept\n"
        assert _state(lxc_conn, n) == 1  # thawed
    assert not list((snr_storage / "snapshots" / far).glob(".*"))  # no part left there
    rows = json.loads(virtmix(*by_name, "snapshot", "ls", far,
                              "-o", "json", check=0).stdout)
    assert [(r["domain"], r["snapshot"], r["state"], r["copy"]) for r in rows] == [
        (far, "s1", "running", "tree")]
    virtmix(*by_name, "snapshot", far, "--name", "s1", check=9)

    for n in (here, far):
        (trees[n] / "root" / "before").unlink()
        (trees[n] / "root" / "after").write_text("lost\n")
    res = virtmix("--allow-uri-commands", "snapshot", "restore", inv, "s1", check=0)
    print(res.stdout)
    assert f"{far}: restored to s1" in res.stdout
    for n in (here, far):
        assert (trees[n] / "root" / "before").read_text() == f"{n} kept\n"
        assert not (trees[n] / "root" / "after").exists()
        assert _state(lxc_conn, n) == 1
        assert not list(trees[n].parent.glob(f".{trees[n].name}.*"))  # no copies left

    # One container by name: taken frozen, restored to the state it had (frozen).
    lxc_conn.lookupByName(far).suspend()
    virtmix(*by_name, "snapshot", far, "--name", "s2", check=0)
    assert _state(lxc_conn, far) == 3
    lxc_conn.lookupByName(far).resume()
    (trees[far] / "root" / "later").write_text("x\n")
    virtmix(*by_name, "snapshot", "restore", far, "s2", check=0)
    assert not (trees[far] / "root" / "later").exists() and _state(lxc_conn, far) == 3
    virtmix(*by_name, "snapshot", "restore", far, "nope", check=6)
    virtmix(*by_name, "snapshot", "rm", far, "s2", check=0)
    virtmix("--allow-uri-commands", "snapshot", "rm", inv, "s1", check=0)
    assert sorted(p.name for p in (snr_storage / "snapshots" / far).iterdir()) == []
    virtmix("destroy", inv, "--yes", "--allow-uri-commands", check=0)


def test_destroy_delete_rootfs_deletes_snapshots(lxc_conn, storage, make_busybox_tree):
    """destroy --delete-rootfs takes the container's snapshots with it (lxc-destroy -s,
    Incus) and says so; --keep-snapshots keeps them and says where."""
    gone, kept = SNAP_PFX + "dg", SNAP_PFX + "dk"
    inv, _trees = _site(storage, make_busybox_tree, [gone, kept])
    for n in (gone, kept):
        virtmix("snapshot", n, "--name", "s1", check=0)
        virtmix("snapshot", n, "--name", "s2", check=0)
    res = virtmix("destroy", gone, "--yes", "--delete-rootfs", check=0)
    where = storage / "snapshots" / gone
    assert f"2 snapshot(s) (s1, s2) in {where}" in res.stdout, res.stdout
    assert not where.exists()
    res = virtmix("destroy", kept, "--yes", "--delete-rootfs", "--keep-snapshots", check=0)
    assert f"{storage / 'snapshots' / kept} (2 snapshot(s) of it, kept" \
        in res.stdout, res.stdout
    assert sorted(p.name for p in (storage / "snapshots" / kept).iterdir()) == ["s1", "s2"]
