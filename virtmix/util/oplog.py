"""Marks of virtmix's own domain operations, so `virtmix watch` can tell them from drift.

Before virtmix starts, stops, defines or undefines a domain it writes a small mark (one
file per URI and name, under the lock directory) with the time it began; when the
operation returns it writes the end time. A lifecycle event that falls inside such a window
(plus a little slack for the event's delivery) is virtmix's own; any other event on a
managed domain is drift. Marks are tiny, best effort and never fail an operation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SLACK_SECONDS = 2.0        # an event may arrive this long after the call returned
STALE_SECONDS = 600.0      # a mark with no end (a killed virtmix) counts this long


def ops_dir() -> Path | None:
    from virtmix.util.locking import lock_dir

    try:
        path = lock_dir() / "ops"
        path.mkdir(mode=0o700, exist_ok=True)
        return path
    except Exception:  # noqa: BLE001 - marks never fail an operation
        return None


def _mark_path(directory: Path, uri: str, name: str) -> Path:
    digest = hashlib.sha256(f"{uri}\0{name}".encode()).hexdigest()[:24]
    return directory / f"{digest}.json"


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


@contextlib.contextmanager
def own_operation(uri: str, name: str, op: str) -> Iterator[None]:
    """Mark `op` on domain `name` of `uri` as virtmix's for its duration (+ slack)."""
    directory = ops_dir()
    if directory is None or not name:
        yield
        return
    path = _mark_path(directory, uri, name)
    mark = {"uri": uri, "name": name, "op": op, "pid": os.getpid(), "begin": time.time(),
            "end": None}
    _write(path, mark)
    try:
        yield
    finally:
        mark["end"] = time.time()
        _write(path, mark)


def is_own(uri: str, name: str, when: float, directory: Path | None = None) -> bool:
    """Whether an event at `when` on (uri, name) was caused by a virtmix operation."""
    directory = directory or ops_dir()
    if directory is None:
        return False
    try:
        mark = json.loads(_mark_path(directory, uri, name).read_text())
    except (OSError, ValueError):
        return False
    begin, end = mark.get("begin", 0.0), mark.get("end")
    if when < begin - 0.05:
        return False
    if end is None:
        return bool(when - begin < STALE_SECONDS)
    return bool(when <= end + SLACK_SECONDS)
