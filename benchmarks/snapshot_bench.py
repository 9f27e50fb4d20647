"""Benchmark of snapshots and backups on the real libvirtd, beside the plain tools.

N running Debian containers (systemd as init, overlay clones of the shared cached bookworm
base, applied from one inventory) get:
  1. `virtmix snapshot SITE --name b1`: all N frozen at one moment, snapshotted, thawed;
  2. `virtmix snapshot restore SITE b1`: all N put back and started again;
  3. `virtmix backup NAME --to DIR` of one of them, beside `tar -cf` of the same tree.
Beside them: cp -a of the same upper layers (what the snapshot copies), a full cp -a of
one container's tree (what `lxc-copy` without -s does), tar of the same tree, and a
virsh suspend/resume loop (what freezing N containers costs with the plain tools).
Targets (issue 13): snapshot of 20 under 2 s, restore under 2 s, backup at disk speed.

Run as root on a host prepared by scripts/setup-host.sh:
    .venv/bin/python benchmarks/snapshot_bench.py [--count 20] [--unprivileged]
Uses the rootfs tests' shared storage (the Debian base is built once per machine) and
domains vmixt-snb-*; removes its containers, snapshots and archives at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "rootfs")]

import lxchelp  # noqa: E402

STORAGE = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs")) \
    / "shared"
PREFIX = "vmixt-snb-"
VIRTMIX = [sys.executable, "-m", "virtmix"]


def run(*args: str, timeout: float = 900, env: dict[str, str] | None = None
        ) -> tuple[float, str]:
    print(f"[{time.strftime('%H:%M:%S')}] virtmix {' '.join(args[:2])}", file=sys.stderr,
          flush=True)
    t0 = time.perf_counter()
    p = subprocess.run([*VIRTMIX, *args], capture_output=True, text=True, cwd=REPO,
                       timeout=timeout, check=False, env={**os.environ, **(env or {})})
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"virtmix {' '.join(args[:3])} exited {p.returncode}:\n"
                         f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return took, p.stdout + p.stderr


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) / 1024


def drop_caches() -> None:
    """Backup speed against tar is compared cold: both read the tree from disk."""
    subprocess.run(["sync"], check=False)
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cleanup(conn, names: list[str], inv: Path) -> None:
    if inv.is_file():
        subprocess.run([*VIRTMIX, "--quiet", "destroy", str(inv), "--yes", "--delete-rootfs"],
                       cwd=REPO, capture_output=True, check=False)
    for name in names:  # whatever destroy did not get (a half-made run)
        lxchelp.destroy_undefine(conn, name)
        shutil.rmtree(STORAGE / "snapshots" / name, ignore_errors=True)
        cdir = STORAGE / "containers" / name
        if (cdir / "rootfs").is_mount():
            subprocess.run(["umount", "-l", str(cdir / "rootfs")], check=False)
        shutil.rmtree(cdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--unprivileged", action="store_true",
                    help="idmapped containers (one shifted copy of the base per container)")
    opts = ap.parse_args()
    n = opts.count
    names = [f"{PREFIX}{i:02d}" for i in range(n)]
    work = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    inv = work / "site.yaml"
    containers = {nm: {"profile": "debian", "memory": "128MiB",
                       "privileged": not opts.unprivileged} for nm in names}
    inv.write_text(yaml.safe_dump({
        "name": PREFIX + "site", "settings": {"storage_dir": str(STORAGE)},
        "hosts": {"h1": {"uri": "qemu:///system", "lxc_uri": "lxc:///system",
                         "containers": containers}}}, sort_keys=False))
    conn = lxchelp.connect()
    cleanup(conn, names, inv)
    try:
        try:
            applied, _ = run("--quiet", "apply", str(inv), "--yes")
        except SystemExit as exc:  # a start lost to the host's shared v1 cgroups: once more
            print(f"apply failed, applying again: {str(exc)[-300:]}", file=sys.stderr)
            applied, _ = run("--quiet", "apply", str(inv), "--yes")
        with ThreadPoolExecutor(4) as pool:
            states = list(pool.map(lambda nm: lxchelp.wait_running(conn, nm, 120)[0], names))
        up = sum(s in ("running", "degraded") for s in states)
        uppers = [STORAGE / "containers" / nm / "upper" for nm in names]
        upper_mib = sum(du_mib(u) for u in uppers) / n
        startup, _ = run("--help")

        # -- snapshot of all N at one moment ------------------------------------------------
        snap, out = run("snapshot", str(inv), "--name", "b1")
        m = re.search(r"frozen for ([0-9.]+)s", out)
        frozen = float(m.group(1)) if m else float("nan")
        states_after = [conn.lookupByName(nm).state()[0] for nm in names]

        # the same freeze + copy with the plain tools
        t0 = time.perf_counter()
        for nm in names:
            subprocess.run(["virsh", "-q", "-c", "lxc:///system", "suspend", nm], check=True,
                           stdout=subprocess.DEVNULL)
        plain_dir = work / "plain"
        plain_dir.mkdir()
        for i, u in enumerate(uppers):
            subprocess.run(["cp", "-a", str(u), str(plain_dir / str(i))], check=True)
        for nm in names:
            subprocess.run(["virsh", "-q", "-c", "lxc:///system", "resume", nm], check=True,
                           stdout=subprocess.DEVNULL)
        plain_snap = time.perf_counter() - t0
        full_cp = timed(["cp", "-a", str(STORAGE / "containers" / names[0] / "rootfs"),
                         str(work / "full-copy")])
        shutil.rmtree(plain_dir)
        shutil.rmtree(work / "full-copy")

        # -- restore of all N -----------------------------------------------------------------
        for nm in names:  # something to throw away
            (STORAGE / "containers" / nm / "rootfs" / "root" / "after-b1").write_text("x\n")
        restore, out = run("snapshot", "restore", str(inv), "b1", env={"VIRTMIX_TIMING": "1"})
        steps = re.search(r"timing: (.*)", out)
        m = re.search(r"restored to b1 in ([0-9.]+)s", out)
        restore_in = float(m.group(1)) if m else float("nan")
        lost = sum((STORAGE / "containers" / nm / "rootfs" / "root" / "after-b1").exists()
                   for nm in names)
        running = sum(conn.lookupByName(nm).state()[0] == 1 for nm in names)
        with ThreadPoolExecutor(4) as pool:
            states2 = list(pool.map(lambda nm: lxchelp.wait_running(conn, nm, 120)[0], names))
        up2 = sum(s in ("running", "degraded") for s in states2)

        # the same with the plain tools, on 5 of them: virsh destroy, cp -a, virsh start
        t0 = time.perf_counter()
        for nm in names[:5]:
            cdir = STORAGE / "containers" / nm
            subprocess.run(["virsh", "-q", "-c", "lxc:///system", "destroy", nm], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cp", "-a", str(cdir / "upper"), str(work / f"plain-{nm}")],
                           check=True)
            subprocess.run(["virsh", "-q", "-c", "lxc:///system", "start", nm], check=True,
                           stdout=subprocess.DEVNULL)
        plain_restore = (time.perf_counter() - t0) / 5
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda nm: lxchelp.wait_running(conn, nm, 120)[0], names[:5]))

        # -- backup of one against tar of the same tree -------------------------------------
        tree = STORAGE / "containers" / names[1] / "rootfs"
        tree_mib = du_mib(tree)
        drop_caches()
        bk, out = run("backup", names[1], "--to", str(work / "backups"))
        m = re.search(r"MiB in ([0-9.]+)s\)", out)
        bk_in = float(m.group(1)) if m else float("nan")
        drop_caches()
        # tar, then sync: virtmix's archive is fsynced before it counts as written
        plain_tar_sync = timed(["sh", "-c", f"tar -C {tree} --numeric-owner --xattrs -cf "
                                f"{work}/plain.tar . && sync -f {work}/plain.tar"])
        archive = next((work / "backups").glob("*.tar"))
        size = archive.stat().st_size / 2**20
        drop_caches()
        plain_cp1 = timed(["cp", "-a", str(tree), str(work / "cp-one")])

        print(f"containers: {n} running Debian (systemd {up}/{n} up), "
              f"{'unprivileged' if opts.unprivileged else 'privileged'} overlay clones of "
              f"the shared base in {STORAGE} ({fs_type(STORAGE)}); applied in {applied:.1f} s; "
              f"upper layer {upper_mib:.1f} MiB each; CLI start-up (virtmix --help) "
              f"{startup:.2f} s")
        print(f"virtmix snapshot SITE (all {n} frozen at one moment): {snap:.2f} s wall, "
              f"frozen for {frozen:.2f} s; all running again: "
              f"{states_after.count(1)}/{n}")
        print(f"  plain tools: virsh suspend x{n} + cp -a of the {n} upper layers + virsh "
              f"resume x{n}: {plain_snap:.2f} s; lxc-copy-style full copy (cp -a) of one "
              f"tree: {full_cp:.2f} s (x{n} = {full_cp * n:.1f} s)")
        print(f"virtmix snapshot restore SITE: {restore:.2f} s wall for {n} ({restore_in:.2f} s "
              f"after the CLI has started and read the site); running "
              f"{running}/{n}, changes thrown away {n - lost}/{n}, systemd up again "
              f"{up2}/{n}; steps: {steps.group(1) if steps else '?'}")
        print(f"  plain tools: virsh destroy + cp -a of the upper layer + virsh start, one "
              f"container after the other: {plain_restore:.2f} s each (x{n} = "
              f"{plain_restore * n:.1f} s)")
        print(f"virtmix backup NAME: {bk:.2f} s wall, {bk_in:.2f} s after the CLI has started "
              f"({tree_mib / bk_in:.0f} MiB/s), for a {tree_mib:.0f} MiB tree ({size:.0f} MiB "
              f"archive, frozen, fsynced); tar -cf + sync of the same tree: "
              f"{plain_tar_sync:.2f} s ({tree_mib / plain_tar_sync:.0f} MiB/s); cp -a of it: "
              f"{plain_cp1:.2f} s (page cache dropped before each)")
    finally:
        cleanup(conn, names, inv)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def fs_type(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    return out.stdout.split()[-1] if out.returncode == 0 else "?"


if __name__ == "__main__":
    sys.exit(main())
