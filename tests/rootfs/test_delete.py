"""Deletion stays inside the storage dir: symlinks, mounts and foreign dirs are refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtmix.errors import ConflictError, NotFoundError, RootfsError
from virtmix.rootfs import remove_container_tree
from virtmix.rootfs.storage import CONTAINER_MARKER, is_mount_point

pytestmark = pytest.mark.slow


@pytest.fixture
def victim() -> Iterator[Path]:
    """A directory outside the storage dir that must survive every test here."""
    d = Path(tempfile.mkdtemp(prefix="vmixt-rootfs-victim-", dir="/var/tmp"))
    (d / "precious").write_text("do not delete\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_refuses_a_container_dir_that_is_a_symlink_out(scratch_storage, victim):
    st = scratch_storage
    (victim / CONTAINER_MARKER).write_text("forged\n")
    link = st.container_dir("vmixt-rootfs-evil")
    link.symlink_to(victim)
    with pytest.raises(ConflictError, match="symlink"):
        remove_container_tree(st, "vmixt-rootfs-evil")
    assert (victim / "precious").exists()
    link.unlink()


def test_refuses_a_parent_symlinked_out_of_storage(scratch_storage, victim):
    st = scratch_storage
    (victim / "vmixt-rootfs-x").mkdir()
    (victim / "vmixt-rootfs-x" / CONTAINER_MARKER).write_text("x\n")
    shutil.rmtree(st.containers_root)
    st.containers_root.symlink_to(victim)
    with pytest.raises(ConflictError, match="outside"):
        remove_container_tree(st, "vmixt-rootfs-x")
    assert (victim / "vmixt-rootfs-x" / CONTAINER_MARKER).exists()
    st.containers_root.unlink()


def test_symlinks_inside_a_tree_are_removed_not_followed(make_container, storage, victim):
    r = make_container("links", privileged=True, clone="copy")
    (r.path / "root/out").symlink_to(victim)
    (r.path / "root/file-out").symlink_to(victim / "precious")
    remove_container_tree(storage, r.name)
    assert not storage.container_dir(r.name).exists()
    assert (victim / "precious").read_text() == "do not delete\n"


def test_refuses_a_tree_with_a_mount_inside(make_container, storage, victim):
    r = make_container("mnt", privileged=True, clone="copy")
    target = r.path / "mnt"
    subprocess.run(["mount", "--bind", str(victim), str(target)], check=True)
    try:
        with pytest.raises(RootfsError, match="mounted inside"):
            remove_container_tree(storage, r.name)
        assert (r.path / "etc/passwd").exists() and (victim / "precious").exists()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    remove_container_tree(storage, r.name)
    assert not storage.container_dir(r.name).exists()


def test_own_overlay_is_unmounted_then_deleted(make_container, storage, bookworm_shifted):
    r = make_container("ovl")
    assert is_mount_point(r.path)
    remove_container_tree(storage, r.name)
    assert not is_mount_point(r.path) and not storage.container_dir(r.name).exists()
    assert (bookworm_shifted.tree / "etc/passwd").exists()  # the shared lower is untouched


def test_refuses_dirs_virtmix_did_not_create(scratch_storage):
    st = scratch_storage
    d = st.container_dir("vmixt-rootfs-foreign")
    d.mkdir()
    (d / "data").write_text("someone's\n")
    with pytest.raises(ConflictError, match="did not create"):
        remove_container_tree(st, "vmixt-rootfs-foreign")
    assert (d / "data").exists()
    with pytest.raises(NotFoundError):
        remove_container_tree(st, "vmixt-rootfs-absent")
    with pytest.raises(RootfsError, match="name"):
        remove_container_tree(st, "../../etc")
