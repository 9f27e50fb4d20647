"""Guests moved between two real QEMU libvirt hosts on this machine, by `apply`.

The source is this machine's libvirtd (qemu:///system); the target a second libvirtd in
namespaces of its own (tests/support/second_host.py: its own hostname, host UUID, state
dirs and a private copy of the site's storage dir, reached over ssh like a remote host).
One apply of the edited inventory moves two guests, both with a qcow2 overlay root disk on a
base image the target does not have:
- `live`: running, migrated by libvirt (plan: `move (live)`); it prints a tick every 0.2 s
  on its serial console and goes on counting on the target without a reboot; its overlay's
  own data and its base arrive; the measured downtime is printed;
- `cold`: shut off, so live is impossible (plan: `move (cold)` and why); its disk and its
  base image are copied, it is defined there, still shut off.
Both keep UUID and MAC, are defined on the target only, and the next plan is empty.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from pathlib import Path

import libvirt
import pytest
from apply_helpers import make_storage_dir, remove_storage_dir, virtmix, write_inventory
from support import wait_for
from support.live import cleanup_domains
from support.second_host import SecondHost, start_second_host

# exclusive: the second libvirtd shares this machine's network namespace, where both daemons
# name the guests' tap devices vnetN; it runs alone, not beside the other tests.
pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.exclusive]

PFX = "vmixt-gm-"
LIVE, COLD = PFX + "live", PFX + "cold"
BRIDGE = "vmixtgm0"
SOURCE = "qemu:///system"  # this machine's daemon: the hosts' first
TICK = re.compile(r"VIRTMIX-TICK (\d+)")


def qemu_io(*args: str) -> str:
    res = subprocess.run(["qemu-io", *args], capture_output=True, text=True, check=True)
    assert "fail" not in res.stdout.lower(), res.stdout
    return res.stdout


def make_base(path: Path, pattern: str) -> None:
    """A small qcow2 base image with 1 MiB of `pattern` at offset 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    qemu_io("-c", f"write -P {pattern} 0 1M", str(path))


def make_overlay(path: Path, base: Path, pattern: str) -> None:
    """The guest's root disk made beforehand (apply keeps it), with data of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(path), "32M"], check=True)
    qemu_io("-c", f"write -P {pattern} 1M 1M", str(path))


def assert_disk(path: Path, base: Path, base_pattern: str, own_pattern: str) -> None:
    """path is an overlay of base (by name) holding both layers' data."""
    info = subprocess.run(["qemu-img", "info", "-U", str(path)], capture_output=True,
                          text=True, check=True).stdout
    assert f"backing file: {base}" in info, info
    qemu_io("-r", "-U", "-c", f"read -P {base_pattern} 0 1M", "-c",
            f"read -P {own_pattern} 1M 1M", str(path))


@pytest.fixture
def hosts(qemu_conn, guest_kernel, tmp_path):
    """(storage dir, second host): the site's storage and the target host; everything
    (both hosts' domains by name, the second daemon, the bridge, the dirs) removed after."""
    storage = make_storage_dir()
    cleanup_domains(qemu_conn, PFX)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    hb: SecondHost | None = None
    try:
        hb = start_second_host(tmp_path / "hostb", PFX + "hostb", (str(storage),))
        yield storage, hb
    finally:
        if hb is not None:
            try:
                other = libvirt.open(hb.unix_uri)
                cleanup_domains(other, PFX)
                other.close()
            except libvirt.libvirtError:
                pass  # stop() below kills whatever it ran anyway
            hb.stop()
        cleanup_domains(qemu_conn, PFX)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        remove_storage_dir(storage)


def inventory(storage: Path, hb: SecondHost, kernel, where: str) -> Path:
    def guest(base: Path, state: str) -> dict:
        return {"memory": "128MiB", "vcpus": 1, "state": state,
                "image": {"path": str(base), "size": "32MiB"},
                "boot": {"kernel": str(kernel.vmlinuz), "initrd": str(kernel.initrd),
                         "cmdline": "console=ttyS0 virtmix.tick"},
                "interfaces": [{"bridge": BRIDGE}]}

    guests = {LIVE: guest(storage / "bases/live.qcow2", "running"),
              COLD: guest(storage / "bases/cold.qcow2", "stopped")}
    hv1 = {"uri": SOURCE, "lxc_uri": "lxc:///system", "virt_type": "qemu"}
    hv2 = {"uri": hb.ssh_uri, "lxc_uri": "lxc:///system", "virt_type": "qemu",
           "migration_address": "127.0.0.1"}
    # The host they left keeps `guests: {}` (as `virtmix move` leaves it): plan reads it.
    hv1["guests"], hv2["guests"] = (guests, {}) if where == "hv1" else ({}, guests)
    return write_inventory(storage, {"hv1": hv1, "hv2": hv2}, name=PFX + "site")


class Downtime(threading.Thread):
    """Polls the guest's state on both hosts every 10 ms: the longest time it ran on
    neither (the source paused for the switch-over until the target resumed it)."""

    def __init__(self, src_uri: str, dst_uri: str, name: str, log: Path) -> None:
        super().__init__(daemon=True)
        self.uris, self.name, self.log = (src_uri, dst_uri), name, log
        self.stop = threading.Event()
        self.longest = 0.0
        self.samples = 0
        self.last_tick = -1  # the last tick its console printed here (its dir goes after)

    def run(self) -> None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # "not found" is data
        conns = [libvirt.open(u) for u in self.uris]
        down_since = None
        while not self.stop.is_set():
            running = False
            for conn in conns:
                try:
                    state = conn.lookupByName(self.name).state()[0]
                except libvirt.libvirtError:
                    continue
                running = running or state == libvirt.VIR_DOMAIN_RUNNING
            with contextlib.suppress(OSError):
                self.last_tick = max([self.last_tick, *ticks(self.log)])
            now = time.monotonic()
            self.samples += 1
            if running:
                if down_since is not None:
                    self.longest = max(self.longest, now - down_since)
                down_since = None
            elif down_since is None:
                down_since = now
            time.sleep(0.01)
        for conn in conns:
            conn.close()


def ticks(log: Path) -> list[int]:
    return [int(n) for n in TICK.findall(log.read_text(errors="replace"))] if log.exists() \
        else []


def test_guests_move_live_and_cold_to_a_second_libvirt_host(qemu_conn, hosts, guest_kernel):
    storage, hb = hosts
    gdir = {g: storage / "guests" / g for g in (LIVE, COLD)}
    bases = {LIVE: storage / "bases/live.qcow2", COLD: storage / "bases/cold.qcow2"}
    pattern = {LIVE: ("0x5a", "0xa5"), COLD: ("0x3c", "0xc3")}
    for g in (LIVE, COLD):
        make_base(bases[g], pattern[g][0])
        make_overlay(gdir[g] / "root.qcow2", bases[g], pattern[g][1])
    inv = str(inventory(storage, hb, guest_kernel, "hv1"))
    virtmix("--allow-uri-commands", "apply", inv, "--yes", check=0)
    before = {g: qemu_conn.lookupByName(g) for g in (LIVE, COLD)}
    ident = {g: (d.UUIDString(), re.search(r"<mac address='([^']+)'", d.XMLDesc()).group(1))
             for g, d in before.items()}
    src_log = gdir[LIVE] / "serial.log"
    wait_for(lambda: len(ticks(src_log)) >= 3, timeout=60, what=f"ticks in {src_log}")

    inv = str(inventory(storage, hb, guest_kernel, "hv2"))
    plan = virtmix("--allow-uri-commands", "plan", inv, check=10).stdout
    print(plan)
    assert re.search(rf"> guest {LIVE} on hv2 \(.*\): move \(live\)", plan), plan
    assert re.search(rf"> guest {COLD} on hv2 \(.*\): move \(cold\)", plan), plan
    assert "cold migration (it is not running (shutoff))" in plan, plan

    poller = Downtime(SOURCE, hb.unix_uri, LIVE, src_log)
    poller.start()
    t0 = time.monotonic()
    res = virtmix("--allow-uri-commands", "apply", inv, "--yes", check=0)
    total = time.monotonic() - t0
    poller.stop.set()
    poller.join()
    out = res.stdout + res.stderr  # apply's per-entry lines are on stderr
    print(out)
    down = re.search(rf"{LIVE}: move \(moved from .*, down (\d+\.\d+)s", out)
    assert down, out
    print(f"live migration: apply {total:.2f}s, libvirt's downtime {down.group(1)}s, "
          f"running on neither host for at most {poller.longest:.3f}s "
          f"({poller.samples} samples)")
    # A sanity bound, not the target: that it ran on through the move is the console's
    # count below (no second boot); 2.29 s was seen under a loaded suite, 0.24 s alone.
    # benchmarks/move_guest_bench.py measures the downtime.
    assert poller.longest < 10.0 and poller.samples > 10

    target = libvirt.open(hb.unix_uri)
    try:
        for g in (LIVE, COLD):
            dom = target.lookupByName(g)
            assert dom.isPersistent()
            mac = re.search(r"<mac address='([^']+)'", dom.XMLDesc()).group(1)
            assert (dom.UUIDString(), mac) == ident[g]
            with pytest.raises(libvirt.libvirtError):
                qemu_conn.lookupByName(g)  # defined on the target only
        assert target.lookupByName(LIVE).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert not target.lookupByName(COLD).isActive()
    finally:
        target.close()

    # It ran on: the target's console goes on counting where the source's stopped, with
    # no second boot.
    last = poller.last_tick
    assert last >= 3
    dst_log = hb.here(src_log)
    wait_for(lambda: len(ticks(dst_log)) >= 3, timeout=30, what=f"ticks in {dst_log}")
    after = ticks(dst_log)
    assert last < after[0] <= last + 10, (last, after[:5])
    assert "VIRTMIX-GUEST-UP" not in dst_log.read_text(errors="replace")

    # The disks and their bases arrived (they were only here); the seed ISO too. The
    # guests' own directories left this host (virtmix's marker went with them); the bases
    # stayed.
    for g in (LIVE, COLD):
        assert not gdir[g].exists() and bases[g].is_file()
        assert hb.here(gdir[g] / ".virtmix-files").is_file()
        assert hb.here(bases[g]).is_file()
        assert_disk(hb.here(gdir[g] / "root.qcow2"), bases[g], *pattern[g])
        assert hb.here(gdir[g] / "seed.iso").is_file()

    again = virtmix("--allow-uri-commands", "plan", inv, check=None)
    assert again.returncode == 0, again.stdout + again.stderr
