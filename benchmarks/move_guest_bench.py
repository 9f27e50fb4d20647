"""Benchmark of guest moves between two real QEMU libvirt hosts on this machine, beside the
plain tools.

Hosts: this machine's libvirtd (qemu:///system) and a second libvirtd in namespaces of its
own (tests/support/second_host.py: own hostname, host UUID, state dirs and storage dir,
reached over ssh). The guest: 256 MiB of memory, direct kernel boot (the tests' busybox
initrd), a qcow2 overlay root disk (16 MiB of its own data) on a base image (256 MiB, 64 MiB
written) that the second host does not have at first.

Measured, each way (there and back), `rounds` times:
- `virtmix move` live (libvirt migration, NON_SHARED_INC onto the overlay virtmix makes
  there; the base copied with rsync the first time only: later rounds find it there);
- by hand: `qemu-img create` of the overlay over ssh, then `virsh migrate --live
  --persistent --undefinesource --copy-storage-inc --migrateuri tcp://127.0.0.1`;
- `virtmix move` cold of the stopped guest (disk copied, defined there) and by hand:
  `rsync -S` of the disk, `virsh define` there, `virsh undefine` here.
Downtime of a live move is libvirt's (the completed job's `downtime`).

Run as root on a host prepared by scripts/setup-host.sh, under the live-test lock:
    flock /tmp/virtmix-live.lock .venv/bin/python benchmarks/move_guest_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support import fetch_guest_kernel  # noqa: E402
from support.live import cleanup_domains  # noqa: E402
from support.second_host import SecondHost, start_second_host  # noqa: E402

PFX = "vmixt-mvb-"
NAME = PFX + "g"
SOURCE = "qemu:///system"  # this machine's daemon: hv1
VIRTMIX = [sys.executable, "-m", "virtmix", "--allow-uri-commands"]


def sh(argv: list[str], timeout: float = 600) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res.stdout + res.stderr


def site_doc(storage: Path, kernel, hb: SecondHost, where: str) -> dict:
    guest = {"memory": "256MiB", "vcpus": 1,
             "image": {"path": str(storage / "bases/base.qcow2"), "size": "256MiB"},
             "boot": {"kernel": str(kernel.vmlinuz), "initrd": str(kernel.initrd),
                      "cmdline": "console=ttyS0 virtmix.tick"}}
    hosts = {"hv1": {"uri": SOURCE, "lxc_uri": "lxc:///system",
                     "virt_type": "qemu", "migration_address": "127.0.0.1", "guests": {}},
             "hv2": {"uri": hb.ssh_uri, "lxc_uri": "lxc:///system", "virt_type": "qemu",
                     "migration_address": "127.0.0.1", "guests": {}}}
    hosts[where]["guests"] = {NAME: guest}
    return {"name": PFX + "site", "settings": {"storage_dir": str(storage)}, "hosts": hosts}


def virtmix_move(site: Path, to: str) -> tuple[float, float]:
    """(downtime, total) of one `virtmix move`, as it reports them."""
    t0 = time.monotonic()
    out = sh([*VIRTMIX, "-i", str(site), "move", NAME, "--to", to])
    total = time.monotonic() - t0
    down = re.search(r"downtime (\d+\.\d+)s", out)
    if not down:
        raise SystemExit(out)
    return float(down.group(1)), total


def ssh_run(hb: SecondHost, command: str) -> str:
    ssh = hb.root / "ssh"
    return sh([str(ssh / "ssh"), "-p", str(hb.port), "root@127.0.0.1", command])


def completed_downtime(uri: str) -> float:
    """libvirt's downtime of the migration that brought the guest to uri (what `virsh
    domjobinfo --completed` prints there)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        stats = conn.lookupByName(NAME).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return int(stats.get("downtime", -1000)) / 1000
    finally:
        conn.close()


def rsync_dir(hb: SecondHost, gdir: Path, remote_is_dst: bool, *extra: str) -> None:
    """The guest's directory (its seed ISO, and the disk unless excluded) to the other host."""
    rsh = f"{hb.root / 'ssh/ssh'} -p {hb.port}"
    where = f"root@127.0.0.1:{gdir}/"
    pair = [f"{gdir}/", where] if remote_is_dst else [where, f"{gdir}/"]
    sh(["rsync", "-aS", "--mkpath", *extra, "-e", rsh, *pair])


def by_hand_live(src: str, dst: str, disk: Path, base: Path, remote_is_dst: bool,
                 hb: SecondHost) -> tuple[float, float]:
    """The admin's live migration with virsh: the files it needs there (its seed ISO; the
    base is there already), its overlay made there, `virsh migrate`; (downtime, total)."""
    t0 = time.monotonic()
    rsync_dir(hb, disk.parent, remote_is_dst, "--exclude", disk.name)
    create = (f"qemu-img create -q -f qcow2 -b {shlex.quote(str(base))} -F qcow2 "
              f"{shlex.quote(str(disk))} 256M")
    if remote_is_dst:
        ssh_run(hb, create)
    else:
        sh(["sh", "-c", create])
    sh(["virsh", "-c", src, "migrate", "--live", "--persistent", "--undefinesource",
        "--copy-storage-inc", "--migrateuri", "tcp://127.0.0.1", NAME, dst])
    total = time.monotonic() - t0
    return completed_downtime(dst), total


def by_hand_cold(src: str, dst: str, disk: Path, hb: SecondHost, remote_is_dst: bool
                 ) -> float:
    """The admin's cold move of a stopped guest: rsync its directory (disk, seed ISO),
    define there, undefine here; seconds."""
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(sh(["virsh", "-q", "-c", src, "dumpxml", "--inactive", NAME]))
        f.flush()
        rsync_dir(hb, disk.parent, remote_is_dst)
        sh(["virsh", "-q", "-c", dst, "define", f.name])
        sh(["virsh", "-q", "-c", src, "undefine", NAME])
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    work = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    storage = work / "storage"
    kernel = fetch_guest_kernel(work / "kernel")  # both hosts have it (as a distro kernel)
    base = storage / "bases/base.qcow2"
    base.parent.mkdir(parents=True)
    sh(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "256M"])
    sh(["qemu-io", "-c", "write -P 0x5a 0 64M", str(base)])
    disk = storage / "guests" / NAME / "root.qcow2"
    disk.parent.mkdir(parents=True)
    sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk),
        "256M"])
    sh(["qemu-io", "-c", "write -P 0xa5 64M 16M", str(disk)])
    import libvirt

    here = libvirt.open(SOURCE)
    cleanup_domains(here, PFX)
    hb = start_second_host(work / "hostb", PFX + "hostb", (str(storage),))
    site = work / "site.yaml"
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        site.write_text(yaml.safe_dump(site_doc(storage, kernel, hb, "hv1"), sort_keys=False))
        sh([*VIRTMIX, "apply", str(site), "--yes"])
        time.sleep(3)  # booted: the console ticks
        for _ in range(rounds):
            results.setdefault("virtmix move, live -> hv2", []).append(
                virtmix_move(site, "hv2"))
            results.setdefault("virtmix move, live -> hv1", []).append(
                virtmix_move(site, "hv1"))
        for _ in range(rounds):
            results.setdefault("virsh migrate --live --copy-storage-inc -> hv2", []).append(
                by_hand_live(SOURCE, hb.ssh_uri, disk, base, True, hb))
            results.setdefault("virsh migrate --live --copy-storage-inc -> hv1", []).append(
                by_hand_live(hb.ssh_uri, SOURCE, disk, base, False, hb))
            ssh_run(hb, f"rm -rf {shlex.quote(str(disk.parent))}")  # the admin's clean-up
        sh(["virsh", "-c", SOURCE, "destroy", NAME])
        for _ in range(rounds):
            results.setdefault("virtmix move, cold (stopped) -> hv2", []).append(
                virtmix_move(site, "hv2"))
            results.setdefault("virtmix move, cold (stopped) -> hv1", []).append(
                virtmix_move(site, "hv1"))
        for _ in range(rounds):
            there = by_hand_cold(SOURCE, hb.ssh_uri, disk, hb, True)
            back = by_hand_cold(hb.ssh_uri, SOURCE, disk, hb, False)
            results.setdefault("rsync -S + virsh define -> hv2", []).append((0.0, there))
            results.setdefault("rsync -S + virsh define -> hv1", []).append((0.0, back))
    finally:
        for uri in (hb.unix_uri,):
            try:
                conn = libvirt.open(uri)
                cleanup_domains(conn, PFX)
                conn.close()
            except libvirt.libvirtError:
                pass
        hb.stop()
        cleanup_domains(here, PFX)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nguest: 256 MiB memory, overlay 16 MiB own data on a 256 MiB base (64 MiB "
          f"written); {rounds} rounds, medians (the first round to hv2 also copies the base)")
    print(f"{'what':50} {'downtime s':>10} {'total s':>8}")
    for label, runs in results.items():
        downs = [r[0] for r in runs]
        print(f"{label:50} {statistics.median(downs):10.3f} "
              f"{statistics.median(r[1] for r in runs):8.2f}   "
              f"(runs: {', '.join(f'{r[1]:.2f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
