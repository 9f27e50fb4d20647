"""Named fault points for the fault-injection suite (tests/faults, benchmarks/faults.py).

`VIRTMIX_FAULT_POINT=NAME[@N]` makes virtmix act when it reaches point NAME (the Nth time,
default the first): `VIRTMIX_FAULT_ACTION=kill` (default) SIGKILLs this process, as a
crash or `kill -9` would; `stop` SIGSTOPs it, so the harness can break something at that
exact moment (kill libvirtd, power a guest off, drop ssh) and then SIGCONT it.

Without the variable a point is one comparison against None: nothing else runs.
"""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("VIRTMIX_FAULT_POINT") or None
_NAME, _, _NTH = (_SPEC or "").partition("@")
_WANT = int(_NTH) if _NTH.isdigit() else 1
_ACTION = os.environ.get("VIRTMIX_FAULT_ACTION", "kill")
_hits = 0
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """Act here if the environment names this point (see the module docstring)."""
    if _SPEC is None or name != _NAME:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits != _WANT:
            return
    os.kill(os.getpid(), signal.SIGSTOP if _ACTION == "stop" else signal.SIGKILL)
