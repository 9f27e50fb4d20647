"""snapshot/backup/restore without a daemon: names, the CLI's spelling, archives, leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.errors import BackendError, ConflictError, RootfsError, UsageError
from virtmix.rootfs.storage import Storage
from virtmix.snapshots import archive, trees

runner = CliRunner()


@pytest.mark.parametrize("bad", ["", "-x", "../up", "a/b", "a\nb", "x" * 65, ".hidden"])
def test_snapshot_names_are_path_safe(bad):
    with pytest.raises(UsageError):
        trees.check_snapshot_name(bad)


def test_default_snapshot_name_is_valid():
    assert trees.check_snapshot_name(trees.default_snapshot_name()).startswith("snap-")


def test_snapshot_without_subcommand_means_create():
    # `virtmix snapshot NAME` reaches create (and fails to find NAME on the test driver).
    res = runner.invoke(app, ["-c", "test:///default", "snapshot", "nosuch", "--name", "s"])
    assert res.exit_code == 6, res.output
    assert "no domain named 'nosuch'" in res.output
    res = runner.invoke(app, ["-c", "test:///default", "snapshot", "restore", "test"])
    assert res.exit_code == 2 and "give SNAP or --name SNAP" in res.output
    res = runner.invoke(app, ["-c", "test:///default", "snapshot", "rm", "test", "a",
                              "--name", "b"])
    assert res.exit_code == 2 and "two snapshot names" in res.output


def _tree(tmp_path: Path) -> trees.TreeSource:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("a\n")
    return trees.TreeSource(Storage(tmp_path / "st"), tree, tree, "tree")


def test_take_list_put_back_remove(tmp_path):
    src = _tree(tmp_path)
    path = trees.take(src, "c1", "s1", {"state": "shutoff"})
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    with pytest.raises(ConflictError):
        trees.take(src, "c1", "s1", {})
    (src.tree / "etc" / "hostname").write_text("changed\n")
    (src.tree / "new").write_text("x")
    meta = trees.find(src.storage, "c1", "s1")
    trees.put_back(src, meta)
    assert (src.tree / "etc" / "hostname").read_text() == "a\n"
    assert not (src.tree / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st", "tree"]  # no swap leftovers
    trees.remove(src.storage, "c1", "s1")
    assert trees.list_for(src.storage, "c1") == []


def test_half_taken_snapshots_are_never_listed_and_are_pruned(tmp_path):
    src = _tree(tmp_path)
    root = trees.snapshot_root(src.storage, "c1")
    dead = root / ".s1.part-999999999"
    dead.mkdir(parents=True)
    (root / "s2").mkdir()  # no snapshot.json: not complete
    assert trees.list_for(src.storage, "c1") == []
    trees.prune_partial(src.storage, "c1")
    assert not dead.exists()


def _archive(tmp_path: Path, manifest: dict | None, first: str = "manifest.json") -> Path:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        body = (tmp_path / first)
        body.write_text(json.dumps(manifest) if manifest is not None else "x")
        tar.add(body, arcname=first)
    return path


def test_archives_are_checked_before_anything_happens(tmp_path):
    with pytest.raises(UsageError, match="no manifest.json first"):
        archive.read_manifest(_archive(tmp_path, {}, first="domain.xml"))
    with pytest.raises(UsageError, match="expected virtmix-backup version 1"):
        archive.read_manifest(_archive(tmp_path, {"format": "other"}))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(UsageError, match="not a readable virtmix backup"):
        archive.read_manifest(junk)
    ok = {"format": archive.FORMAT, "version": archive.VERSION, "kind": "lxc"}
    assert archive.read_manifest(_archive(tmp_path, ok))["kind"] == "lxc"


def test_take_many_copies_side_by_side_and_syncs_once(tmp_path, monkeypatch):
    srcs = []
    for i in range(3):
        tree = tmp_path / f"tree{i}"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "hostname").write_text(f"c{i}\n")
        srcs.append(trees.TreeSource(Storage(tmp_path / "st"), tree, tree, "tree"))
    synced = []
    monkeypatch.setattr(trees, "_sync", lambda p: synced.append(p))
    seen = []

    def copy(pairs):  # the caller's frozen window: every copy happens inside it
        seen.extend(pairs)
        trees.copy_all(pairs, jobs=2)

    paths = trees.take_many([(s, f"c{i}", {"state": "running"}) for i, s in enumerate(srcs)],
                            "s1", copy=copy)
    assert len(seen) == 3 and len(synced) == 1  # one filesystem: one sync
    for i, p in enumerate(paths):
        assert (p / "data" / "etc" / "hostname").read_text() == f"c{i}\n"
        assert json.loads((p / "snapshot.json").read_text())["state"] == "running"
    # put all back at once after changes
    for s in srcs:
        (s.tree / "etc" / "hostname").write_text("changed\n")
    trees.put_back_many([(s, trees.find(s.storage, f"c{i}", "s1")) for i, s in enumerate(srcs)])
    for i, s in enumerate(srcs):
        assert (s.tree / "etc" / "hostname").read_text() == f"c{i}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st", "tree0", "tree1", "tree2"]


def test_a_failed_copy_leaves_no_snapshot(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    st = Storage(tmp_path / "st")
    jobs = [(trees.TreeSource(st, ok, ok, "tree"), "c0", {}),
            (trees.TreeSource(st, ok, tmp_path / "missing", "tree"), "c1", {})]
    with pytest.raises(RootfsError, match="copying"):
        trees.take_many(jobs, "s1")
    assert trees.list_for(st, "c0") == [] and trees.list_for(st, "c1") == []
    assert not [p for p in (st.root / "snapshots").rglob(".*")]


class LocalShell:
    """The far host's side of a restore over ssh, run here: the same script, fed the
    archive on stdin as ssh does."""

    def run(self, archive_path, script, label):
        with open(archive_path, "rb") as f:
            res = subprocess.run(["sh", "-c", "set -e; " + script], stdin=f,
                                 capture_output=True, check=False)
        if res.returncode:
            raise BackendError(f"{label}: exit {res.returncode}: {res.stderr.decode()}")


def _container_archive(tmp_path: Path) -> tuple[Path, dict]:
    src = tmp_path / "src"
    (src / "root").mkdir(parents=True)
    (src / "root" / "data").write_text("travels\n")
    os.symlink("data", src / "root" / "link")
    meta = tmp_path / "meta"
    meta.mkdir()
    manifest = {"format": archive.FORMAT, "version": archive.VERSION, "name": "c1",
                "kind": "lxc", "contents": {"rootfs": "rootfs/", "tree": str(src)}}
    (meta / "manifest.json").write_text(json.dumps(manifest))
    (meta / "domain.xml").write_text("<domain type='lxc'/>")
    path = tmp_path / "c1.vmxbak.tar"
    subprocess.run(["tar", "-C", str(meta), "-cf", str(path), "--format=posix",
                    "manifest.json", "domain.xml", "-C", str(src), "--numeric-owner",
                    "--xattrs", "--transform", r"s,^\.,rootfs,", "."], check=True)
    return path, manifest


DOMAIN = ("<domain type='lxc'><name>c1</name><idmap><uid start='0' target='100000' "
          "count='65536'/></idmap><devices><filesystem type='mount'><source dir='/old/c1'/>"
          "<target dir='/'/></filesystem></devices></domain>")


def test_remote_container_unpack_script(tmp_path):
    from lxml import etree

    path, manifest = _container_archive(tmp_path)
    storage = Storage(tmp_path / "far")  # not created: the far side makes it
    tree = etree.fromstring(DOMAIN)
    archive._unpack_container(path, storage, "c1", tree, manifest, LocalShell())
    cdir = storage.container_dir("c1")
    assert (cdir / "rootfs" / "root" / "data").read_text() == "travels\n"
    assert os.readlink(cdir / "rootfs" / "root" / "link") == "data"
    assert (cdir / ".virtmix-container").is_file()
    state = json.loads((cdir / "state.json").read_text())
    assert state["idmap"] == [0, 100000, 65536] and state["method"] == "copy"
    assert tree.find("devices/filesystem/source").get("dir") == str(cdir / "rootfs")
    assert sorted(p.name for p in storage.containers_root.iterdir()) == ["c1"]
    with pytest.raises(BackendError, match="exists there"):  # never over another tree
        archive._unpack_container(path, storage, "c1", etree.fromstring(DOMAIN), manifest,
                                  LocalShell())
    assert sorted(p.name for p in storage.containers_root.iterdir()) == ["c1"]


def test_remote_guest_unpack_script(tmp_path):
    from lxml import etree

    meta = tmp_path / "meta"
    (meta / "files").mkdir(parents=True)
    (meta / "files" / "disk0-disk0.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 100)
    (meta / "files" / "kernel-vmlinuz").write_bytes(b"kernel")
    manifest = {"format": archive.FORMAT, "version": archive.VERSION, "name": "g1",
                "kind": "kvm", "contents": {"files": ["disk0-disk0.qcow2", "kernel-vmlinuz"]}}
    (meta / "manifest.json").write_text(json.dumps(manifest))
    path = tmp_path / "g1.tar"
    subprocess.run(["tar", "-C", str(meta), "-cf", str(path), "manifest.json", "files"],
                   check=True)
    xml = ("<domain type='qemu'><name>g1</name><os><kernel>/old/g1/vmlinuz</kernel></os>"
           "<devices><disk type='file'><driver type='qcow2'/><source file='/old/g1/disk0.qcow2'/>"
           "</disk><serial type='file'><source path='/old/g1/serial.log'/></serial></devices>"
           "</domain>")
    tree = etree.fromstring(xml)
    storage = Storage(tmp_path / "far")
    archive._unpack_guest(path, storage, "g1", tree, manifest, LocalShell())
    gdir = tmp_path / "far" / "guests" / "g1"
    assert sorted(p.name for p in gdir.iterdir()) == [
        ".virtmix-files", "disk0-disk0.qcow2", "kernel-vmlinuz"]
    assert tree.find("devices/disk/source").get("file") == str(gdir / "disk0-disk0.qcow2")
    assert tree.findtext("os/kernel") == str(gdir / "kernel-vmlinuz")
    assert tree.find("devices/serial/source").get("path") == str(gdir / "serial.log")


@pytest.fixture
def test_driver(monkeypatch, tmp_path):
    from support.testdriver import held_test_driver

    yield from held_test_driver(monkeypatch, tmp_path, "vmixt-snb-")


def test_host_snapshot_takes_every_domain_of_that_host(test_driver, tmp_path):
    """`snapshot --host H` (with -i): every domain of that inventory host, at one moment,
    and ls/restore/rm of the same set; on the test driver's own guest 'test'."""
    inv = tmp_path / "site.yaml"
    inv.write_text("name: vmixt-snb-site\nhosts:\n"
                   "  h1: {uri: 'test:///default', lxc_uri: 'test:///default',\n"
                   "       guests: {test: {memory: 128MiB}}}\n"
                   "  h2: {uri: 'test:///default', lxc_uri: 'test:///default'}\n")
    base = ["-i", str(inv), "snapshot"]
    res = runner.invoke(app, [*base, "--host", "h1", "--name", "s1"])
    assert res.exit_code == 0, res.output
    assert "test: snapshot s1 taken" in res.output
    assert test_driver.get("test").state == "running"  # thawed again
    res = runner.invoke(app, [*base, "ls", "--host", "h1", "-o", "json"])
    assert [(r["domain"], r["snapshot"]) for r in json.loads(res.output)] == [("test", "s1")]
    res = runner.invoke(app, [*base, "restore", "--host", "h1", "s1"])
    assert res.exit_code == 0 and "test: restored to s1" in res.output, res.output
    res = runner.invoke(app, [*base, "--host", "h2", "--name", "s2"])
    assert res.exit_code == 6 and "no domain of host h2" in res.output
    res = runner.invoke(app, [*base, "rm", "--host", "h1", "s1"])
    assert res.exit_code == 0, res.output
    assert test_driver.list_snapshots("test") == []
    res = runner.invoke(app, [*base, "--host", "h9"])
    assert res.exit_code == 6 and "no host of that name" in res.output


def test_backup_and_restore_keep_identity_on_the_test_driver(test_driver, tmp_path,
                                                              monkeypatch):
    """backup -> restore on libvirt's test driver: the archive is self-describing
    (manifest first, definition, tree), the restore keeps UUID and MAC and the running
    state; --new-identity (under another name) lets libvirt choose new ones."""
    monkeypatch.setenv("VIRTMIX_STORAGE", str(tmp_path / "storage"))
    tree = tmp_path / "tree"
    (tree / "root").mkdir(parents=True)
    (tree / "root" / "data").write_text("precious\n")
    uuid, mac = "0b5c1d52-9a4e-4c1e-9d0e-7f2a4a0a0001", "52:54:00:5e:a1:07"
    test_driver.define(
        f"<domain type='lxc'><name>vmixt-snb-c</name><uuid>{uuid}</uuid>"
        "<memory>65536</memory><os><type>exe</type><init>/bin/sh</init></os><devices>"
        f"<filesystem type='mount'><source dir='{tree}'/><target dir='/'/></filesystem>"
        f"<interface type='network'><mac address='{mac}'/><source network='default'/>"
        "</interface><console type='pty'/></devices></domain>")
    test_driver.start("vmixt-snb-c")
    c = ["-c", "test:///default"]
    res = runner.invoke(app, [*c, "backup", "vmixt-snb-c", "--to", str(tmp_path / "bk")])
    assert res.exit_code == 0, res.output
    path = next((tmp_path / "bk").glob("vmixt-snb-c-*.vmxbak.tar"))
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names[:2] == ["manifest.json", "domain.xml"] and "rootfs/root/data" in names
    manifest = archive.read_manifest(path)
    assert (manifest["uuid"], manifest["kind"], manifest["state"]) == (uuid, "lxc", "running")
    assert test_driver.get("vmixt-snb-c").state == "running"  # thawed after the archive

    res = runner.invoke(app, [*c, "restore", str(path)])
    assert res.exit_code == 9, res.output  # it exists: nothing overwritten
    test_driver.destroy("vmixt-snb-c")
    test_driver.undefine("vmixt-snb-c")
    res = runner.invoke(app, [*c, "restore", str(path)])
    assert res.exit_code == 0, res.output
    rec = test_driver.get("vmixt-snb-c")
    assert rec.uuid == uuid and rec.state == "running" and mac in rec.xml
    restored = tmp_path / "storage" / "containers" / "vmixt-snb-c" / "rootfs"
    assert (restored / "root" / "data").read_text() == "precious\n"
    assert f"<source dir='{restored}'/>" in rec.xml

    res = runner.invoke(app, [*c, "restore", str(path), "--name", "vmixt-snb-c2",
                              "--new-identity"])
    assert res.exit_code == 0, res.output
    rec2 = test_driver.get("vmixt-snb-c2")
    assert rec2.uuid != uuid and mac not in rec2.xml
