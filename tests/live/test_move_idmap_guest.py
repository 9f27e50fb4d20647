"""An unprivileged Debian systemd container moved from this host (cgroup v1: the shared range
0 -> 100000) into an LXC-host guest (cgroup v2: a range of the guest's own), issue 13: the
tree is shifted to the guest's range on the guest (by its python3), systemd runs there, and
every file keeps its owner inside. The guest boots once (~2-3 min under TCG), hence `slow`.
"""

from __future__ import annotations

from pathlib import Path

import move_helpers
import pytest
from move_helpers import STORAGE, systemd_up, virtmix

from virtmix.images import remove_guest_files
from virtmix.nesting.guests import open_site
from virtmix.rootfs.storage import Storage

pytestmark = [pytest.mark.live, pytest.mark.slow]

PFX = "vmixt-mvig-"
GUEST, CT, KEEP = PFX + "g", PFX + "deb", PFX + "keep"
GUEST_IP = "10.213.87.10"

SITE = f"""\
name: {PFX}site
settings: {{storage_dir: {STORAGE}}}
networks:
  {PFX}net: {{host: hv, mode: isolated, bridge: vmixtmi1, ipv4: 10.213.87.1/24}}
hosts:
  hv:
    uri: qemu:///system
    lxc_uri: lxc:///system
    virt_type: qemu
    containers:
      {CT}:                      # unprivileged: the host's shared range here
        profile: debian
        privileged: false
        memory: 256MiB
    guests:
      {GUEST}:
        vcpus: 2
        memory: 1GiB
        image: {{packages: [rsync, python3-minimal]}}
        interfaces: [{{network: {PFX}net, ipv4: {GUEST_IP}/24}}]
        containers:
          {KEEP}:
            rootfs: {{path: /usr/share/virtmix/busybox-root}}
            init: [/bin/sh, -c, "while :; do sleep 3600; done"]
            memory: 32MiB
"""


def guest_sh(command: str) -> str:
    return move_helpers.guest_sh(GUEST_IP, command)


@pytest.fixture(scope="module")
def site(lxc_conn, tmp_path_factory):
    from support.live import cleanup_domains

    path = tmp_path_factory.mktemp("moveidg") / "site.yaml"
    path.write_text(SITE)

    def clean() -> None:
        # --force: the guest's orderly shutdown (its libvirtd, its container) took a minute
        virtmix("destroy", str(path), "--yes", "--delete-rootfs", "--force")
        cleanup_domains(lxc_conn, PFX)
        from virtmix.rootfs import remove_container_tree

        if (STORAGE / "containers" / CT).exists():
            remove_container_tree(Storage(STORAGE), CT)
        remove_guest_files(open_site(path), GUEST)

    clean()
    try:
        res = virtmix("apply", str(path), "--yes")
        assert res.returncode == 0, res.stdout + res.stderr
        yield path
    finally:
        path.write_text(SITE)
        clean()


def _attach(site: Path, address: str, command: str) -> str:
    res = virtmix("-i", str(site), "attach", address, "--", "sh", "-c", command)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_unprivileged_systemd_container_into_a_guest_with_its_own_range(site, lxc_conn):
    assert systemd_up(site, CT) in ("running", "degraded")
    host_range = lxc_conn.lookupByName(CT).XMLDesc(0).split("<uid start='0' target='")[1]
    _attach(site, CT, "mkdir -p /home/u && echo hi > /home/u/f && chown -R 1000:1001 /home/u"
                      " && ln -sf /home/u/f /home/u/l && chown -h 1000:1001 /home/u/l && sync")
    before = _attach(site, CT, "stat -c '%u:%g %a %n' / /root /home/u/f /home/u/l "
                               "/usr/bin/passwd /var/log/journal 2>/dev/null; true")

    res = virtmix("-i", str(site), "move", CT, "--to", GUEST)
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout + res.stderr)
    assert "its tree was shifted from ids" in res.stderr
    xml = guest_sh(f"virsh -c lxc:///system dumpxml {CT}")
    guest_range = xml.split("<uid start='0' target='")[1]
    assert guest_range.split("'")[0] != host_range.split("'")[0]
    assert systemd_up(site, f"{GUEST}/{CT}") in ("running", "degraded")
    after = _attach(site, f"{GUEST}/{CT}", "stat -c '%u:%g %a %n' / /root /home/u/f "
                                           "/home/u/l /usr/bin/passwd /var/log/journal "
                                           "2>/dev/null; true")
    assert after == before, (before, after)
    assert _attach(site, f"{GUEST}/{CT}", "cat /home/u/f") == "hi"
