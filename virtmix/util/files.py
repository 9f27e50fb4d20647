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
import tempfile
from pathlib import Path

from virtmix.util.faults import fault_point


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write data to path durably: temp file (same dir, final mode), fsync, rename, fsync
    the directory. Readers see the old content or the new, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point("write-atomic-before-rename")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """fsync a file another program wrote (qemu-img, cpio) before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
