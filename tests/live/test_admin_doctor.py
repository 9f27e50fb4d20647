"""`virtmix doctor` on this host (prepared by scripts/setup-host.sh) and on a dead URI."""

from __future__ import annotations

import json

from admin_helpers import vm


def test_doctor_on_this_host(libvirtd):
    proc = vm("doctor")
    lines = proc.stdout.splitlines()
    for name in ("libvirt lxc:///system", "libvirt qemu:///system", "/dev/kvm",
                 "cgroup layout", "unprivileged containers", "overlay clones",
                 "inotify instances", "storage"):
        assert any(f"  {name}: " in line for line in lines), (name, proc.stdout)
    assert lines[-1].startswith(f"{len([ln for ln in lines if ln[:4] in ('ok  ', 'warn')])}"
                                " checks: 0 failed")
    checks = {c["name"]: c for c in json.loads(vm("doctor", "-o", "json").stdout)}
    # setup-host.sh leaves a pure v1 (or pure v2) layout: never the hybrid one.
    assert checks["cgroup layout"]["status"] == "ok"
    assert checks["libvirt lxc:///system"]["status"] == "ok"
    assert checks["unprivileged containers"]["status"] == "ok"


def test_doctor_fails_on_a_dead_uri():
    proc = vm("doctor", "test:///nonexistent/node.xml", check=12)
    assert "FAIL  libvirt test:///nonexistent/node.xml" in proc.stdout
    assert "-> start libvirtd" in proc.stdout
    assert "Traceback" not in proc.stderr
