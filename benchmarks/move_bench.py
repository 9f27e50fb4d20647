"""Benchmark of `virtmix move`: a Debian systemd container to an LXC-host guest and back.

Beside it, the same move by hand with the plain tools, as an admin does it without virtmix:
`virsh dumpxml > x.xml`, `virsh destroy`, `rsync -aHAX --numeric-ids` of the tree over
ssh, `virsh -c TARGET define x.xml`, `virsh -c TARGET start`, `virsh undefine` (one copy,
with the container down for all of it). Downtime is stop/freeze -> running on the target.

The site is tests/live/test_move.py's (guest vmixt-mv-g with rsync in its image, the
container vmixt-mv-deb from the tests' cached Debian base); it is applied first (the guest
boots: ~2-3 min under TCG) and destroyed at the end.

Run as root on a host prepared by scripts/setup-host.sh, under the live-test lock:
    flock /tmp/virtmix-live.lock .venv/bin/python benchmarks/move_bench.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "live"), str(REPO / "tests")]

import test_move as t  # noqa: E402  (the live test's site and helpers)

from virtmix.backend import resolve_uri  # noqa: E402
from virtmix.hosts.ssh import ssh_argv  # noqa: E402
from virtmix.nesting.guests import open_site  # noqa: E402

HOST_URI = "lxc:///system"


def virtmix_move(site: Path, to: str) -> tuple[float, float]:
    """(downtime, total) of one `virtmix move`."""
    t0 = time.monotonic()
    res = t.virtmix("-i", str(site), "move", t.CT, "--to", to)
    total = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"virtmix move failed: {res.stdout}{res.stderr}")
    return t.downtime(res.stdout), total


def sh(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def by_hand(src: str, dst: str, tree: str) -> tuple[float, float]:
    """The plain tools' move from src to dst (URIs virsh opens); (downtime, total)."""
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(sh(["virsh", "-q", "-c", src, "dumpxml", "--inactive", t.CT]))
        f.flush()
        remote = dst if "+ssh" in dst else src
        argv = ssh_argv(remote)
        rsh, host = " ".join(shlex.quote(a) for a in argv[:-2]), argv[-1]
        where = f"{host}:{tree}/"
        pair = [f"{tree}/", where] if remote == dst else [where, f"{tree}/"]
        down = time.monotonic()
        sh(["virsh", "-q", "-c", src, "destroy", t.CT])
        sh(["rsync", "-aHAX", "--numeric-ids", "--delete", "--mkpath", "-e", rsh, *pair])
        sh(["virsh", "-q", "-c", dst, "define", f.name])
        sh(["virsh", "-q", "-c", dst, "start", t.CT])
        downtime = time.monotonic() - down
        sh(["virsh", "-q", "-c", src, "undefine", t.CT])
    return downtime, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    rounds = ap.parse_args().rounds
    site = Path(tempfile.mkdtemp(prefix=t.PFX + "bench-")) / "site.yaml"
    site.write_text(t.SITE)
    loaded = open_site(site)
    guest_uri = loaded.find(f"{t.GUEST}/{t.KEEP}").uri
    tree = f"{t.STORAGE}/containers/{t.CT}/rootfs"
    res = t.virtmix("apply", str(site), "--yes")
    if res.returncode != 0:
        raise SystemExit(res.stdout + res.stderr)
    try:
        t.guest_sh("ip link add vmixtmv0 type bridge && ip addr add 10.213.84.1/24 dev "
                   "vmixtmv0 && ip link set vmixtmv0 up")  # as the live test does
        print(f"systemd in {t.CT}: {t.systemd_up(site, t.CT)}")
        size = sh(["du", "-sh", tree]).split()[0]
        files = sh(["sh", "-c", f"find {tree} -xdev | wc -l"]).strip()
        there, back = [], []
        for _ in range(rounds):
            there.append(virtmix_move(site, t.GUEST))
            back.append(virtmix_move(site, "hv"))
        hand_there, hand_back = [], []
        real_guest = resolve_uri(guest_uri)
        for _ in range(rounds):
            hand_there.append(by_hand(HOST_URI, real_guest, tree))
            hand_back.append(by_hand(real_guest, HOST_URI, tree))
        print(f"\ntree: {size}, {files} files; host lxc:///system <-> guest {guest_uri}")
        print(f"{'what':44} {'downtime s':>10} {'total s':>8}")
        for label, runs in (("virtmix move -> guest (live copy + frozen)", there),
                            ("virtmix move -> host", back),
                            ("by hand -> guest (destroy, rsync, define)", hand_there),
                            ("by hand -> host", hand_back)):
            print(f"{label:44} {statistics.median(r[0] for r in runs):10.2f} "
                  f"{statistics.median(r[1] for r in runs):8.2f}")
    finally:
        site.write_text(t.SITE)
        t.virtmix("destroy", str(site), "--yes", "--delete-rootfs")
        from virtmix.images import remove_guest_files

        remove_guest_files(loaded, t.GUEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
