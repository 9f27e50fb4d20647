"""Locks that keep two applies (or an apply and a destroy) off the same inventory and daemons.

flock() on files under /run/virtmix/locks (or a per-user runtime directory when /run is not
writable): the kernel drops a lock when its holder dies, so a killed apply never leaves a
stale lock behind. One lock per inventory and one per libvirt URI, always taken in sorted
order, so two inventories sharing a host also wait for each other without deadlock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from virtmix.errors import ConflictError

POLL_SECONDS = 0.1


def lock_dir() -> Path:
    for base in (os.environ.get("VIRTMIX_LOCK_DIR"), "/run/virtmix/locks",
                 os.environ.get("XDG_RUNTIME_DIR") and f"{os.environ['XDG_RUNTIME_DIR']}/virtmix",
                 f"/tmp/virtmix-{os.getuid()}/locks"):
        if not base:
            continue
        path = Path(base)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise ConflictError("no writable directory for virtmix's locks (/run/virtmix/locks)")


def lock_name(kind: str, key: str) -> str:
    """A file name that says what is locked and cannot collide: readable part + digest."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[-40:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{kind}-{readable}-{digest}.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another virtmix process"
    except OSError:
        return "another virtmix process"


def _acquire(path: Path, what: str, *, wait: bool, timeout: float | None,
             on_wait: Callable[[str], None] | None) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            holder = _holder(path)
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
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({purpose}, since "
                          f"{time.strftime('%H:%M:%S')})\n".encode(), 0)
        yield
    finally:
        for fd, _path in reversed(fds):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
