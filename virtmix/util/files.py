"""Writing files: into root trees and images that virtmix builds (shared by rootfs, images,
and the busybox template), and state/secret files that virtmix later trusts (write_atomic).

A tree may already hold a symlink where we write (Debian ships some, e.g. /etc/resolv.conf):
it is replaced, never followed, so a write can only land inside the tree.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
