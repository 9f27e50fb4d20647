"""Writing files: crash-consistent writes of what virtmix trusts later, and files written
into root trees and images that virtmix builds (shared by rootfs, images, busybox).

write_atomic is the one way virtmix writes a file it reads back and trusts (state, cache
metadata, markers, stamps): a temporary file in the same directory, fsynced, renamed over
the target, the directory fsynced. After a crash or power cut the file is the old one or
the new one, never empty or half-written (ext4 commits data only every few seconds).

A tree may already hold a symlink where we write (Debian ships some, e.g. /etc/resolv.conf):
it is replaced, never followed, so a write can only land inside the tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
from pathlib import Path

from virtmix.util.faults import fault_point


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file another program wrote (qemu-img, cpio) before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> int:
    """fsync every file and directory below root (not following symlinks); returns how
    many. For a small tree (an overlay clone's upper dir: the few files customise wrote)
    this is far cheaper than syncfs(2), which also flushes whatever else is dirty on the
    filesystem (the journals of a thousand running containers)."""
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            count += 1
        fsync_dir(Path(dirpath))
        count += 1
    return count


def sync_filesystem(path: Path) -> None:
    """Flush the whole filesystem holding path (syncfs(2); sync(2) where it is missing):
    before a built tree is marked complete, every file in it must be on disk."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if not hasattr(libc, "syncfs") or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` (parents made) with `mode`, replacing a symlink there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def replace_symlink(path: Path, target: str) -> None:
    """Make `path` a symlink to `target` (parents made), replacing what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def make_dir(path: Path, mode: int) -> bool:
    """Create path (and missing parents) with exactly `mode`; True when it was made here.

    An existing directory is left as it is: virtmix never changes the mode or owner of a
    directory it did not create (it may be the admin's, shared with other tools).
    """
    path = Path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False
    os.chmod(path, mode)  # the umask may have taken bits away
    return True


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data`, all or nothing, readable as `mode` from the first byte.

    The temporary file is created in the same directory with the final mode (O_EXCL,
    O_NOFOLLOW: never through a planted file or symlink), so a secret (mode 0o600) is never
    readable by others, not even for a moment; it is fsynced, renamed over path (a symlink
    at path is replaced, not followed), and the directory is fsynced so the rename survives
    a crash. A reader sees the old or the new content, never a mix.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        fault_point("write-atomic-before-rename")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
