"""The type checks of `make lint` (mypy --strict on the packages it lists) pass; run here too
so that CI, which runs the test suite, sees a type error as a failure."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mypy_lines() -> list[list[str]]:
    """The mypy commands of the Makefile's lint target, as argument lists."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(r"^lint:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert body, "Makefile has no lint target"
    return [shlex.split(line.strip())[1:] for line in body.group(1).splitlines()
            if "/mypy " in line]


def test_lint_checks_the_backend_hosts_and_util_strictly():
    assert ["--strict", "virtmix/backend", "virtmix/hosts", "virtmix/util"] in _mypy_lines()


@pytest.mark.parametrize("args", _mypy_lines(), ids=lambda a: " ".join(a[1:]))
def test_mypy_strict_passes(args):
    res = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
