"""Long-running child processes (rootfs and image builds) that a second Ctrl-C may kill.

Builders run in their own session, so the terminal's Ctrl-C does not reach them: apply's
first Ctrl-C waits for them (nothing half-made), and names them from this registry; the
second kills their process groups here. Their callers then remove the partial output
(the build's temporary directory) as for any failed build.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_lock = threading.Lock()
_running: dict[int, Running] = {}
_label = threading.local()


@dataclass(frozen=True)
class Running:
    pid: int       # the process group leader (started with start_new_session)
    what: str      # e.g. "rootfs build (mmdebstrap bookworm)"
    label: str     # what it is for, e.g. the container's name ("" when unknown)


@contextlib.contextmanager
def working_for(label: str) -> Iterator[None]:
    """Children started by this thread inside the block are for `label` (an entry)."""
    old = getattr(_label, "value", "")
    _label.value = label
    try:
        yield
    finally:
        _label.value = old


@contextlib.contextmanager
def tracked(pid: int, what: str) -> Iterator[None]:
    with _lock:
        _running[pid] = Running(pid, what, getattr(_label, "value", ""))
    try:
        yield
    finally:
        with _lock:
            _running.pop(pid, None)


def running() -> list[Running]:
    with _lock:
        return list(_running.values())


def kill_all() -> list[Running]:
    """SIGKILL every tracked process group; returns what was killed."""
    killed = running()
    for r in killed:
        with contextlib.suppress(OSError):
            os.killpg(r.pid, signal.SIGKILL)
    return killed
