"""Waiting for something to become true: the one polling loop of virtmix.

libvirt and the kernel report many changes only by their result (a domain's state, a
container's init pid, a cgroup's freeze, a guest's daemon answering), so callers ask
again until a deadline. One loop keeps the deadline arithmetic (monotonic clock, a last
check at the deadline) and the early stop (an Event) the same everywhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T | None], *, timeout: float, interval: float = 0.1,
         stop: threading.Event | None = None) -> T | None:
    """Call check() until it returns something other than None (returned), or until
    timeout seconds passed or stop is set (None). check runs at least once, and once more
    at the deadline, so a short timeout still sees a change that just happened."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return None
        time.sleep(min(interval, left))


def wait_until(predicate: Callable[[], bool], *, timeout: float,
               interval: float = 0.1) -> bool:
    """True as soon as predicate() is true, False if it is still false after timeout."""
    return poll(lambda: True if predicate() else None, timeout=timeout,
                interval=interval) is not None
