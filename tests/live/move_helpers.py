"""What the live move tests share: the storage their guests' images are cached in, the
virtmix CLI with a long guest wait, a shell in an LXC-host guest, and waiting for systemd
in a container (on the host or NAME in a guest, GUEST/NAME)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from virtmix.images import run_ssh
from virtmix.rootfs.storage import Storage

STORAGE = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs")) \
    / "shared"
VIRTMIX = str(Path(sys.executable).parent / "virtmix")


def virtmix(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIRTMIX, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "VIRTMIX_GUEST_WAIT": "300"},
                          stdin=subprocess.DEVNULL)


def guest_sh(address: str, command: str) -> str:
    return run_ssh(Storage(STORAGE), address, command, timeout=120).stdout


def systemd_up(site: Path, address: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        res = virtmix("-i", str(site), "attach", address, "--", "systemctl",
                      "is-system-running")
        state = res.stdout.strip()
        if state in ("running", "degraded") or time.monotonic() > deadline:
            return state
        time.sleep(2)
