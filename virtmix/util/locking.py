"""Locks that keep two applies (or an apply and a destroy) off the same inventory and daemons.

flock() on files under /run/virtmix/locks (or a per-user runtime directory when /run is not
writable): the kernel drops a lock when its holder dies, so a killed apply never leaves a
stale lock behind. One lock per inventory and one per libvirt URI, always taken in sorted
order, so two inventories sharing a host also wait for each other without deadlock.

The directory must be owned by root (virtmix's user) and closed to everyone else (0700):
another local user who could plant a file or a symlink there could make root write through
it. Lock files are opened with O_NOFOLLOW, must be regular files of ours, and are never
truncated: the holder's note is a fixed-width record written over the start of the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from virtmix.errors import ConflictError
from virtmix.util.files import make_dir

POLL_SECONDS = 0.1


HOLDER_WIDTH = 160  # bytes of the holder's note; a fixed width, so nothing is ever truncated


def check_private_dir(path: Path) -> Path:
    """path, when it is a real directory owned by us with no access for group and others."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConflictError(f"lock directory {path}: not a directory (a symlink?); refusing "
                            "to use it", hint=f"remove {path}; virtmix makes it again")
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ConflictError(
            f"lock directory {path}: owned by uid {st.st_uid} with mode "
            f"{stat.S_IMODE(st.st_mode):04o}; virtmix needs it owned by uid {os.geteuid()} "
            "and mode 0700 (others could plant files or symlinks there)",
            hint=f"chown {os.geteuid()} {path} && chmod 0700 {path}, or remove it")
    return path


def lock_dir() -> Path:
    for base in (os.environ.get("VIRTMIX_LOCK_DIR"), "/run/virtmix/locks",
                 os.environ.get("XDG_RUNTIME_DIR") and f"{os.environ['XDG_RUNTIME_DIR']}/virtmix",
                 f"/tmp/virtmix-{os.getuid()}/locks"):
        if not base:
            continue
        path = Path(base)
        try:
            if not path.parent.is_dir():
                make_dir(path.parent, 0o700)
            make_dir(path, 0o700)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return check_private_dir(path)
    raise ConflictError("no writable directory for virtmix's locks (/run/virtmix/locks)")


def open_lock_file(path: Path) -> int:
    """An fd on the lock file at path: created 0600 if missing, never through a symlink,
    never truncated, and only a regular file of ours."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConflictError(f"lock file {path}: is a symlink; refusing to follow it",
                                hint=f"remove {path}") from None
        raise ConflictError(f"lock file {path}: cannot open it ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise ConflictError(f"lock file {path}: not a regular file of uid {os.geteuid()}; "
                            "refusing to use it", hint=f"remove {path}")
    return fd


def lock_name(kind: str, key: str) -> str:
    """A file name that says what is locked and cannot collide: readable part + digest."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[-40:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{kind}-{readable}-{digest}.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, HOLDER_WIDTH, 0).decode(errors="replace")
    except OSError:
        text = ""
    return text.strip() or "another virtmix process"


def write_holder(fd: int, note: str) -> None:
    """The holder's note over the start of the file, padded to HOLDER_WIDTH (no truncate)."""
    data = note.encode()[:HOLDER_WIDTH - 1] + b"\n"
    os.pwrite(fd, data.ljust(HOLDER_WIDTH, b" "), 0)


def _acquire(path: Path, what: str, *, wait: bool, timeout: float | None,
             on_wait: Callable[[str], None] | None) -> int:
    fd = open_lock_file(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            holder = _holder(fd)
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                os.close(fd)
                waited = "" if not wait else f" after waiting {timeout:g}s"
                raise ConflictError(
                    f"{what} is locked by {holder}{waited} ({path})",
                    hint="wait for it to finish, or pass --wait/--lock-timeout") from None
            if not told and on_wait is not None:
                on_wait(f"waiting for {what}: locked by {holder}")
                told = True
            time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def locked(targets: list[tuple[str, str]], *, purpose: str, wait: bool = True,
           timeout: float | None = None,
           on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold exclusive locks on targets [(kind, key)], e.g. ("inventory", path), ("uri", uri).

    wait=False refuses at once when a lock is held; otherwise waits up to timeout seconds
    (None: for ever), calling on_wait once with a message naming the holder.
    """
    base = lock_dir()
    fds: list[tuple[int, Path]] = []
    try:
        for kind, key in sorted(set(targets)):
            path = base / lock_name(kind, key)
            fd = _acquire(path, f"{kind} {key}", wait=wait, timeout=timeout, on_wait=on_wait)
            fds.append((fd, path))
            write_holder(fd, f"pid {os.getpid()} ({purpose}, since "
                             f"{time.strftime('%H:%M:%S')})")
        yield
    finally:
        for fd, _path in reversed(fds):
            with contextlib.suppress(OSError):
                write_holder(fd, "")
            os.close(fd)
