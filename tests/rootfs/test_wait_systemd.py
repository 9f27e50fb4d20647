"""`apply --wait` and `start --wait` wait for systemd inside a real Debian container."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lxchelp import PREFIX

pytestmark = [pytest.mark.live, pytest.mark.slow]


def _virtmix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "virtmix", *args], capture_output=True,
                          text=True, timeout=300)


def test_apply_and_start_wait_until_systemd_reports(make_container, lxc, tmp_path: Path):
    made = make_container("wait")
    name = PREFIX + "wait"
    storage = tmp_path / "storage"
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump({"name": PREFIX + "waitsite", "settings": {
        "storage_dir": str(storage)}, "hosts": {"h1": {
            "uri": "qemu:///system", "lxc_uri": "lxc:///system", "containers": {
                name: {"rootfs": {"path": str(made.path)}, "privileged": False,
                       "memory": "256MiB"}}}}}))
    res = _virtmix("apply", str(inv), "--yes", "--wait", "--wait-timeout", "90")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "systemd running" in out or "systemd degraded" in out
    assert _virtmix("stop", name).returncode == 0
    res = _virtmix("start", name, "--wait", "--wait-timeout", "90")
    assert res.returncode == 0, res.stderr
    assert "(systemd running)" in res.stdout or "(systemd degraded)" in res.stdout
