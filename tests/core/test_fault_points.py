"""VIRTMIX_FAULT_POINT: the named point kills the process at its Nth hit; others do nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

SCRIPT = ("from virtmix.util.faults import fault_point\n"
          "for i in range(3):\n"
          "    fault_point('other'); print('before', i, flush=True); fault_point('here')\n"
          "print('end', flush=True)\n")


def _run(env: dict) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=full, timeout=30)


def test_without_the_variable_nothing_happens() -> None:
    res = _run({"VIRTMIX_FAULT_POINT": ""})
    assert res.returncode == 0 and res.stdout.split("\n")[-2] == "end"


def test_the_nth_hit_of_the_named_point_is_a_sigkill() -> None:
    res = _run({"VIRTMIX_FAULT_POINT": "here@2"})
    assert res.returncode == -signal.SIGKILL
    assert res.stdout.splitlines() == ["before 0", "before 1"]


def test_the_first_hit_by_default() -> None:
    res = _run({"VIRTMIX_FAULT_POINT": "here"})
    assert res.returncode == -signal.SIGKILL and res.stdout.splitlines() == ["before 0"]
