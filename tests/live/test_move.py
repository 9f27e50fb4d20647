"""A Debian systemd container moved to an LXC-host guest (a second real libvirt host, reached
over lxc+ssh) and back: `virtmix move` there, `apply` of the edited inventory back.

Kept on both legs: UUID, MAC, address (answering ping on the same bridge name on each
side), and what was written in its tree; it runs on exactly one host after each move;
the downtime (freeze -> running on the target) is under 5 s to the guest (back: see
below).

Then, in the same guest, an unprivileged Debian systemd container is moved from this host
(cgroup v1: the shared range 0 -> 100000) into it (cgroup v2: a range of the guest's own):
the tree is shifted to the guest's range on the guest (by its python3), systemd runs
there, and every file keeps its owner inside.

The guest is booted once for the module (~1 min under TCG, its image cached in the shared
storage), hence `slow`.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import move_helpers
import pytest
from move_helpers import STORAGE, systemd_up, virtmix

from virtmix.images import remove_guest_files
from virtmix.inventory.edit import move_entry
from virtmix.nesting.guests import open_site
from virtmix.rootfs.storage import Storage

pytestmark = [pytest.mark.live, pytest.mark.slow]

PFX = "vmixt-mv-"
GUEST, CT, KEEP = PFX + "g", PFX + "deb", PFX + "keep"
UCT = PFX + "udeb"  # the unprivileged one
GUEST_IP, CT_IP = "10.213.83.10", "10.213.84.20"

SITE = f"""\
name: {PFX}site
settings: {{storage_dir: {STORAGE}}}
networks:
  {PFX}net: {{host: hv, mode: isolated, bridge: vmixtmv1, ipv4: 10.213.83.1/24}}
  # the container's network here; in the guest the test makes a bridge of the same name
  # and range (a libvirt network there needs iptables, which the guest image lacks)
  {PFX}hnet: {{host: hv, mode: isolated, bridge: vmixtmv0, ipv4: 10.213.84.1/24}}
hosts:
  hv:
    uri: qemu:///system
    lxc_uri: lxc:///system
    virt_type: qemu
    containers:
      {CT}:                      # moved to the guest and back
        profile: debian
        # privileged: an unprivileged one gets another id range in the guest's id space
        # (move shifts its tree then: the second test below), and an explicit `idmap:` other than
        # the host's shared range fails here (systemd cannot make its v1 cgroups)
        privileged: true
        memory: 256MiB
        interfaces: [{{bridge: vmixtmv0, ipv4: {CT_IP}/24}}]
    guests:
      {GUEST}:
        vcpus: 2
        memory: 1GiB
        # the default image: rsync and python3 (a shift to the guest's range runs it)
        interfaces: [{{network: {PFX}net, ipv4: {GUEST_IP}/24}}]
        containers:
          {KEEP}:
            rootfs: {{path: /usr/share/virtmix/busybox-root}}
            init: [/bin/sh, -c, "while :; do sleep 3600; done"]
            memory: 32MiB
"""


# The same site with the unprivileged container on the host: added by the second test, so
# that it starts alone (side by side with the privileged one, on this cgroup v1 host where
# all containers share one name=systemd tree, its journald once failed with 219/CGROUP).
UNPRIV_ENTRY = f"""\
      {UCT}:                     # unprivileged: the host's shared range here
        profile: debian
        privileged: false
        memory: 256MiB
"""


def with_unprivileged(text: str) -> str:
    marker = "    containers:\n"  # the host's containers (the first such line)
    assert marker in text, text
    return text.replace(marker, marker + UNPRIV_ENTRY, 1)


def guest_sh(command: str) -> str:
    return move_helpers.guest_sh(GUEST_IP, command)


def in_guest(name: str) -> tuple[str, str, str]:
    """(state, uuid, mac) of a container in the guest; state '' when not defined there."""
    out = guest_sh(f"virsh -q -c lxc:///system domstate {name} 2>/dev/null; "
                   f"virsh -q -c lxc:///system domuuid {name} 2>/dev/null; "
                   f"virsh -q -c lxc:///system domiflist {name} 2>/dev/null; true").split()
    if not out:
        return "", "", ""
    mac = next((w for w in out if re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", w)), "")
    return out[0], out[1], mac


def on_host(lxc_conn, name: str) -> tuple[str, str, str]:
    import libvirt

    try:
        dom = lxc_conn.lookupByName(name)
    except libvirt.libvirtError:
        return "", "", ""
    mac = re.search(r"<mac address='([^']+)'", dom.XMLDesc()).group(1)
    return ("running" if dom.isActive() else "shut off"), dom.UUIDString(), mac


def downtime(text: str) -> float:
    match = re.search(r"down(?:time)? (\d+\.\d+)s", text)
    assert match, text
    return float(match.group(1))


@pytest.fixture(scope="module")
def site(lxc_conn, tmp_path_factory):
    from support.live import cleanup_domains

    path = tmp_path_factory.mktemp("move") / "site.yaml"
    path.write_text(SITE)

    def clean() -> None:
        # --force: the guest's orderly shutdown (its libvirtd, its container) took 30 s
        virtmix("destroy", str(path), "--yes", "--delete-rootfs", "--force")
        cleanup_domains(lxc_conn, PFX)
        from virtmix.rootfs import remove_container_tree

        for name in (CT, UCT):
            if (STORAGE / "containers" / name).exists():
                remove_container_tree(Storage(STORAGE), name)
        loaded = open_site(path)
        remove_guest_files(loaded, GUEST)

    clean()
    try:
        t0 = time.monotonic()
        res = virtmix("apply", str(path), "--yes")
        if res.returncode != 0 and on_host(lxc_conn, CT)[0] == "shut off":
            # What its systemd said (the libvirt log has nothing of the container's own).
            con = subprocess.run(["timeout", "10", "script", "-qc",
                                  f"virsh -c lxc:///system start --console {CT}", "/dev/null"],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL)
            pytest.fail(res.stdout + res.stderr + "\nconsole:\n" + con.stdout[-3000:])
        assert res.returncode == 0, res.stdout + res.stderr
        print(f"apply (guest boot, container) took {time.monotonic() - t0:.1f}s")
        guest_sh("ip link add vmixtmv0 type bridge && ip addr add 10.213.84.1/24 dev vmixtmv0 "
                 "&& ip link set vmixtmv0 up")
        yield path
    finally:
        # wherever the containers went, destroy finds them by name
        path.write_text(with_unprivileged(SITE))
        clean()


def test_debian_container_to_the_guest_and_back(site, lxc_conn):
    assert systemd_up(site, CT) in ("running", "degraded")
    state, uuid, mac = on_host(lxc_conn, CT)
    assert state == "running"
    ping = ["/bin/busybox", "ping", "-c", "1", "-W", "3", CT_IP]
    assert subprocess.run(ping, capture_output=True).returncode == 0
    res = virtmix("-i", str(site), "attach", CT, "--", "sh", "-c",
                  "echo before-move > /root/mark; sync")
    assert res.returncode == 0, res.stderr

    # There: `virtmix move`, the inventory edited in place.
    res = virtmix("-i", str(site), "move", CT, "--to", GUEST)
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout)
    # The downtime is printed, not asserted: it is a figure of this machine's load (3.0 s
    # alone, 7.9 s beside the TCG guests of the other test lane); benchmarks/move_bench.py
    # measures it against the 5 s target.
    there = downtime(res.stdout)
    assert in_guest(CT) == ("running", uuid, mac)
    assert on_host(lxc_conn, CT) == ("", "", "")  # on exactly one host
    assert not (STORAGE / "containers" / CT).exists()
    assert f"        containers:\n          {KEEP}:" in site.read_text()
    assert open_site(site).find(CT).parent == GUEST
    assert guest_sh(f"busybox ping -c 1 -W 3 {CT_IP} >/dev/null && echo ok").strip() == "ok"
    assert systemd_up(site, f"{GUEST}/{CT}") in ("running", "degraded")
    res = virtmix("-i", str(site), "attach", f"{GUEST}/{CT}", "--", "cat", "/root/mark")
    assert res.stdout.strip() == "before-move", res.stdout + res.stderr
    assert "nothing to do" in virtmix("plan", str(site)).stdout

    # Back: the inventory edited as an admin would, `plan` says move, `apply` does it.
    text = site.read_text()
    site.write_text(move_entry(text, ("hosts", "hv", "guests", GUEST, "containers", CT),
                               ("hosts", "hv", "containers")))
    plan = virtmix("plan", str(site))
    assert f"> container {CT} on hv (lxc:///system): move" in plan.stdout, plan.stdout
    assert f"from guest {GUEST}" in plan.stdout and "create" not in plan.stdout, plan.stdout
    res = virtmix("apply", str(site), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout + res.stderr)
    back = downtime(res.stdout + res.stderr)  # apply's per-entry lines are on stderr
    # Seen: libvirt's freeze of this systemd container in the guest (cgroup v2) fails after
    # a timeout ("Suspend operation failed"); move then stops it instead, so the way back
    # is slower than the 5 s target (the failed freeze's wait plus the copy while stopped).
    assert back < 20.0, res.stdout
    assert on_host(lxc_conn, CT) == ("running", uuid, mac)
    assert in_guest(CT) == ("", "", "")
    assert guest_sh(f"test -e {STORAGE}/containers/{CT} && echo left || echo gone"
                    ).strip() == "gone"
    assert subprocess.run(ping, capture_output=True).returncode == 0
    assert systemd_up(site, CT) in ("running", "degraded")
    res = virtmix("-i", str(site), "attach", CT, "--", "cat", "/root/mark")
    assert res.stdout.strip() == "before-move", res.stdout + res.stderr
    assert "nothing to do" in virtmix("plan", str(site)).stdout
    print(f"downtime: to the guest {there:.2f}s, back {back:.2f}s")


def _attach(site: Path, address: str, command: str) -> str:
    res = virtmix("-i", str(site), "attach", address, "--", "sh", "-c", command)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_unprivileged_systemd_container_into_a_guest_with_its_own_range(site, lxc_conn):
    site.write_text(with_unprivileged(SITE))
    res = virtmix("apply", str(site), "--yes", "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    assert systemd_up(site, UCT) in ("running", "degraded")
    host_range = lxc_conn.lookupByName(UCT).XMLDesc(0).split("<uid start='0' target='")[1]
    _attach(site, UCT, "mkdir -p /home/u && echo hi > /home/u/f && chown -R 1000:1001 /home/u"
                       " && ln -sf /home/u/f /home/u/l && chown -h 1000:1001 /home/u/l && sync")
    stat = ("stat -c '%u:%g %a %n' / /root /home/u/f /home/u/l /usr/bin/passwd "
            "/var/log/journal 2>/dev/null; true")
    before = _attach(site, UCT, stat)

    res = virtmix("-i", str(site), "move", UCT, "--to", GUEST)
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout + res.stderr)
    assert "its tree was shifted from ids" in res.stderr
    xml = guest_sh(f"virsh -c lxc:///system dumpxml {UCT}")
    guest_range = xml.split("<uid start='0' target='")[1]
    assert guest_range.split("'")[0] != host_range.split("'")[0]
    assert systemd_up(site, f"{GUEST}/{UCT}") in ("running", "degraded")
    after = _attach(site, f"{GUEST}/{UCT}", stat)
    assert after == before, (before, after)
    assert _attach(site, f"{GUEST}/{UCT}", "cat /home/u/f") == "hi"
    assert on_host(lxc_conn, UCT) == ("", "", "")
