"""snapshot/backup/restore without a daemon: names, the CLI's spelling, archives, leftovers."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.errors import ConflictError, UsageError
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
