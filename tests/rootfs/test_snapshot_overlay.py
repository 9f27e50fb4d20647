"""Snapshots of a built Debian container (an unprivileged overlay clone) on the real libvirtd:
only the upper layer is copied, the container runs on after it, a restore brings files back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lxchelp
import pytest

pytestmark = [pytest.mark.live, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def virtmix(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    res = subprocess.run([sys.executable, "-m", "virtmix", "-c", lxchelp.URI, *args],
                         capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert res.returncode == check, f"{args} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def test_overlay_clone_snapshot_copies_the_upper_layer_only(make_container, lxc,
                                                             bookworm_shifted):
    r = make_container("snap")
    assert r.method == "overlay"
    lxchelp.destroy_undefine(lxc, r.name)
    lxc.defineXML(lxchelp.domain_xml(r.name, str(r.path), r.idmap)).create()
    state, _ = lxchelp.wait_running(lxc, r.name, timeout=60)
    assert state in ("running", "degraded")
    lxchelp.run_inside(lxc, r.name, "/bin/sh", "-c", "echo kept > /root/kept", check=True)

    virtmix("snapshot", r.name, "--name", "s1")
    meta = json.loads(virtmix("snapshot", "ls", r.name, "-o", "json").stdout)[0]
    assert meta["copy"] == "upper" and meta["state"] == "running"
    data = Path(meta["path"]) / "data"
    assert (data / "root" / "kept").read_text() == "kept\n"
    assert not (data / "usr" / "bin" / "dpkg").exists()  # the base stays in the cache
    st = (data / "root" / "kept").stat()
    assert st.st_uid == r.idmap[1]  # shifted ownership kept

    lxchelp.run_inside(lxc, r.name, "/bin/sh", "-c", "rm /root/kept; echo new > /root/new",
                       check=True)
    virtmix("snapshot", "restore", r.name, "s1")
    state, _ = lxchelp.wait_running(lxc, r.name, timeout=60)
    assert state in ("running", "degraded")
    inside = lxchelp.run_inside(lxc, r.name, "/bin/sh", "-c",
                                "cat /root/kept; ls /root/new 2>&1; id -u").stdout
    assert inside.splitlines()[0] == "kept" and "No such file" in inside
    assert inside.splitlines()[-1] == "0"
    virtmix("snapshot", "rm", r.name, "s1")
    assert not data.exists()
