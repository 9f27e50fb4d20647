"""Many systemd containers from one inventory (issue 13's density work), small scale: the
shared id range of a cgroup v1 host takes more than one container, and destroy kills a
container's init at once instead of libvirt's SIGTERM-and-wait (1.8 s per container)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from apply_helpers import lxc_host, make_storage_dir, remove_storage_dir, virtmix
from support import lxc_run, wait_for

pytestmark = pytest.mark.live

PFX = "vmixt-dens-t"
COUNT = 3


def _alive(pid: int) -> bool:
    """A process that runs (a zombie does not: this machine's pid 1 reaps no orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_apply_starts_several_debian_containers_and_destroy_kills_them_at_once(
        lxc_conn, domain_cleanup):
    shared = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs"))
    storage = shared / "shared"  # the cache the other Debian apply tests use
    storage.mkdir(parents=True, exist_ok=True)
    names = [f"{PFX}{i}" for i in range(COUNT)]
    domain_cleanup(lxc_conn, PFX)
    inv = Path(make_storage_dir()) / "dens.yaml"
    inv.write_text(yaml.safe_dump({
        "site": PFX + "site", "settings": {"storage_dir": str(storage), "idmap": "shared"},
        "hosts": {"local": lxc_host({n: {"profile": "debian"} for n in names})}}))
    try:
        res = virtmix("apply", str(inv), "--yes", "-j", "3", timeout=900)
        assert res.returncode == 0, res.stderr  # each tree made for the one shared range
        for n in names:
            wait_for(lambda n=n: lxc_run(n, ["systemctl", "is-system-running"]).stdout.strip()
                     in ("running", "degraded"), 90, f"systemd in {n}")
        # Recipe 5: the base's systemd-update-done stamps keep systemd-sysusers (a
        # ConditionNeedsUpdate= unit) from running at each clone's first boot.
        shown = lxc_run(names[0], ["systemctl", "show", "-p", "ConditionResult",
                                   "systemd-sysusers.service"]).stdout.strip()
        assert shown == "ConditionResult=no", shown
        pids = [lxc_conn.lookupByName(n).ID() for n in names]
        t0 = time.monotonic()
        res = virtmix("destroy", str(inv), "--yes", "--force", "--delete-rootfs")
        took = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        assert "forced off" in res.stdout, res.stdout
        # libvirt's own destroy waited 8 x 200 ms on SIGTERM, which systemd survives, for
        # each container; the three together now go in well under that per container
        # (the command's own start, ~1 s, included).
        assert took < 1.6 * COUNT, f"destroy of {COUNT} took {took:.1f} s"
        assert not [n for n in names if n in {d.name() for d in lxc_conn.listAllDomains()}]
        assert not [p for p in pids if _alive(p)]  # their libvirt_lxc controllers too
        assert not [n for n in names if (storage / "containers" / n).exists()]
    finally:
        virtmix("destroy", str(inv), "--yes", "--force", "--delete-rootfs")
        remove_storage_dir(inv.parent)
