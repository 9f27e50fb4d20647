"""Many Debian systemd containers started at once (apply -j 12) all come up `running`, with
no failed unit: on this cgroup v1 host without cgroup namespaces each one's systemd keeps
its groups under a `name=systemd` group of its own (the base's init wrapper,
rootfs/cgroup_init.py), where before they shared the hierarchy's top and removed each
other's groups (219/CGROUP, `degraded`). Privileged and idmapped containers side by side
too, which failed even two at a time. destroy removes the groups libvirt leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from apply_helpers import lxc_host, make_storage_dir, remove_storage_dir, virtmix
from support import container_init_pid, lxc_run, wait_for

pytestmark = pytest.mark.live

PFX = "vmixt-cgv1-"
UNPRIVILEGED, PRIVILEGED = 10, 2
SYSTEMD_TREE = Path("/sys/fs/cgroup/systemd")
BOOTING = ("initializing", "starting", "")  # "" while its bus is not up yet


def _v1_shared_host() -> bool:
    """This host's name=systemd hierarchy is a cgroup v1 mount (the case being fixed)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(SYSTEMD_TREE) and " - cgroup " in line
                   for line in f)


def _state(name: str) -> str:
    r = lxc_run(name, ["systemctl", "is-system-running"])
    return r.stdout.strip()


def _systemd_group(name: str) -> str:
    """The name=systemd group of the container's init, as the host sees it."""
    with open(f"/proc/{container_init_pid(name)}/cgroup") as f:
        for line in f:
            _, ctl, path = line.rstrip("\n").split(":", 2)
            if ctl == "name=systemd":
                return path
    return ""


def _groups_of(name: str) -> list[str]:
    found = []
    for root in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/pids"):
        for parent in (Path(root), Path(root) / "machine"):
            if parent.is_dir():
                found += [str(p) for p in parent.glob(f"lxc-*-{name}.libvirt-lxc")]
    return found


def test_parallel_systemd_containers_all_run_with_no_failed_unit(lxc_conn, domain_cleanup):
    shared = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs"))
    storage = shared / "shared"  # the cache the other Debian apply tests use
    storage.mkdir(parents=True, exist_ok=True)
    privileged = [f"{PFX}p{i}" for i in range(PRIVILEGED)]
    names = [f"{PFX}u{i}" for i in range(UNPRIVILEGED)] + privileged
    domain_cleanup(lxc_conn, PFX)
    entries = {n: {"profile": "debian", **({"privileged": True} if n in privileged else {})}
               for n in names}
    inv = Path(make_storage_dir()) / "cgv1.yaml"
    inv.write_text(yaml.safe_dump({
        "site": PFX + "site", "settings": {"storage_dir": str(storage), "idmap": "shared"},
        "hosts": {"local": lxc_host(entries)}}))
    try:
        # one apply makes the trees and starts the containers, up to 12 at once
        res = virtmix("apply", str(inv), "--yes", "-j", "12", timeout=1200)
        assert res.returncode == 0, res.stderr
        states = {n: wait_for(lambda n=n: (s := _state(n)) not in BOOTING and s,
                              120, f"systemd in {n} past starting") for n in names}
        failed = {n: lxc_run(n, ["systemctl", "--failed", "--no-legend", "--plain"]
                             ).stdout.strip() for n in names}
        assert states == dict.fromkeys(names, "running"), \
            {n: (states[n], failed[n]) for n in names if states[n] != "running"}
        assert not any(failed.values()), failed
        for n in names:  # the wrapper exec'd systemd under init's own name (ps aux)
            with open(f"/proc/{container_init_pid(n)}/cmdline") as f:
                assert f.read().split("\0")[0] == "/sbin/init", n
        if _v1_shared_host():
            groups = {n: _systemd_group(n) for n in names}
            for n, g in groups.items():  # its own, named after libvirt's machine group
                assert g.endswith(f"-{n}.libvirt-lxc/init.scope"), groups
            assert len(set(groups.values())) == len(names), groups
            for n in privileged:  # under libvirt's own group
                assert groups[n].startswith("/machine/lxc-"), groups[n]
                with open(f"/proc/{container_init_pid(n)}/cgroup") as f:
                    memory = [ln for ln in f if ":memory:" in ln][0].split(":", 2)[2]
                # systemd stayed inside libvirt's memory group (it went to the
                # hierarchy's /init.scope before, out of the container's limit)
                assert memory.startswith(groups[n].rsplit("/", 1)[0]), memory
        res = virtmix("destroy", str(inv), "--yes", "--force", "--delete-rootfs")
        assert res.returncode == 0, res.stderr
        left = {n: g for n in names if (g := _groups_of(n))}
        assert not left, f"groups left in the shared hierarchies: {left}"
    finally:
        virtmix("destroy", str(inv), "--yes", "--force", "--delete-rootfs")
        remove_storage_dir(inv.parent)
