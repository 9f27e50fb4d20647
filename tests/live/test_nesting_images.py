"""Interrupted guest-image builds: never a cache entry that looks complete, nothing left
after Ctrl-C, and what a crash leaves is pruned (no full build needed: interrupted early)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virtmix.images import list_images
from virtmix.images.build import images_root, prune_leftovers
from virtmix.rootfs.storage import Storage

pytestmark = pytest.mark.slow

BUILD = ("from virtmix.images import ImageSpec, ensure_image\n"
         "from virtmix.rootfs.storage import Storage\n"
         "import sys\n"
         "ensure_image(ImageSpec(packages=('hello',)), Storage(sys.argv[1]))\n")


@pytest.fixture
def storage():
    root = Path("/var/tmp") / f"vmixt-nest-images-{os.getpid()}"
    yield Storage(root)
    shutil.rmtree(root, ignore_errors=True)


def _mmdebstrap_pids(storage: Storage) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"mmdebstrap .*{storage.root}/images/"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _start_build(storage: Storage) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(storage.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _mmdebstrap_pids(storage):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "mmdebstrap did not start"
        time.sleep(0.2)
    return proc


def _entries(storage: Storage) -> list[str]:
    root = images_root(storage)
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_ctrl_c_leaves_nothing(storage):
    proc = _start_build(storage)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert _entries(storage) == [] and list_images(storage) == []
    deadline = time.monotonic() + 30  # its mmdebstrap was killed with it
    while _mmdebstrap_pids(storage):
        assert time.monotonic() < deadline, "mmdebstrap outlived the interrupted build"
        time.sleep(0.2)


def test_a_crash_leaves_a_hidden_leftover_that_prune_removes(storage):
    proc = _start_build(storage)
    time.sleep(1)
    proc.kill()  # SIGKILL: no cleanup runs, as in a crash of virtmix
    proc.communicate(timeout=30)
    for pid in _mmdebstrap_pids(storage):  # a crash of the machine takes the builder too
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    time.sleep(0.5)
    left = _entries(storage)
    assert len(left) == 1 and left[0].startswith(".build-"), left
    assert list_images(storage) == []  # never taken for a complete image
    assert prune_leftovers(storage) == left
    assert _entries(storage) == []
