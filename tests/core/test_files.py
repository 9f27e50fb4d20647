"""write_atomic: durable, whole, with its mode, and nothing left behind when it fails."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from virtmix.util.files import fsync_dir, sync_filesystem, write_atomic


def test_write_atomic_writes_whole_with_mode_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b'{"a": 1}\n', mode=0o600)
    assert target.read_bytes() == b'{"a": 1}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # the default mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_atomic_replaces_a_symlink_never_follows_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(outside)
    write_atomic(link, b"mine")
    assert outside.read_text() == "keep" and not link.is_symlink()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path: Path,
                                                             monkeypatch) -> None:
    target = tmp_path / "meta.json"
    write_atomic(target, b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_write_atomic_signature_is_the_agreed_one() -> None:
    import inspect

    sig = inspect.signature(write_atomic)
    assert list(sig.parameters) == ["path", "data", "mode"]
    assert sig.parameters["mode"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["mode"].default == 0o644


def test_sync_helpers_run(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    fsync_dir(tmp_path)
    sync_filesystem(tmp_path)


def test_a_container_dir_appears_with_its_marker_and_stale_halves_are_cleaned(
        tmp_path: Path) -> None:
    from virtmix.rootfs.storage import CONTAINER_MARKER, Storage

    st = Storage(tmp_path / "st")
    st.ensure()
    stale = st.containers_root / ".new-c1-4242"  # a kill between mkdir and rename
    stale.mkdir()
    (stale / f".{CONTAINER_MARKER}.x.part").write_text("c1")
    assert st.container_names() == []
    cdir = st.make_container_dir("c1")
    assert (cdir / CONTAINER_MARKER).read_text() == "c1\n"
    assert not stale.exists()
    assert st.container_names() == ["c1"]


def test_fsync_tree_flushes_every_file_and_dir_below_and_skips_links(tmp_path, monkeypatch):
    """An overlay clone's upper dir is fsynced file by file (not the whole filesystem):
    every regular file and directory is flushed once; symlinks and devices are not opened."""
    import os

    from virtmix.util.files import fsync_tree

    (tmp_path / "etc/systemd").mkdir(parents=True)
    (tmp_path / "etc/hostname").write_text("c1\n")
    (tmp_path / "etc/systemd/x.conf").write_text("x\n")
    os.symlink("/nonexistent", tmp_path / "etc/dangling")
    os.mkfifo(tmp_path / "etc/fifo")  # opening it for reading would block
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}")), real(fd))[1])
    assert fsync_tree(tmp_path) == 5
    assert sorted(synced) == sorted(str(p) for p in (
        tmp_path, tmp_path / "etc", tmp_path / "etc/systemd", tmp_path / "etc/hostname",
        tmp_path / "etc/systemd/x.conf"))
