"""Benchmark of virtmix's rootfs: first build vs plain mmdebstrap, containers from the cache
to systemd running (sequential and 4 parallel), disk and memory (PSS) per running container.

Run as root on a host prepared by scripts/setup-host.sh:  .venv/bin/python
benchmarks/rootfs_bench.py [--count 20] [--workers 4] [--builds 1]. Uses its own storage dir
(/var/tmp/virtmix-bench-rootfs, removed at the end) and domains named vmixt-rootfs-bench-*.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "rootfs")]

import lxchelp  # noqa: E402

from virtmix.errors import VirtmixError  # noqa: E402
from virtmix.rootfs import (  # noqa: E402
    ContainerSetup,
    RootfsSpec,
    Storage,
    provision_container,
    remove_container_tree,
)
from virtmix.rootfs.build import BASE_PACKAGES, ensure_base  # noqa: E402
from virtmix.rootfs.cache import disk_usage  # noqa: E402
from virtmix.rootfs.idmap import IDMAP_OFFSET  # noqa: E402
from virtmix.rootfs.sources import resolve_sources  # noqa: E402

ROOT = Path("/var/tmp/virtmix-bench-rootfs")
PREFIX = "vmixt-rootfs-bench-"
SPEC = RootfsSpec(suite="bookworm")


def plain_mmdebstrap(target: Path) -> float:
    """The same build done by hand: mmdebstrap, same sources and packages, nothing else."""
    src = resolve_sources(SPEC.suite, SPEC.components, SPEC.mirror)
    cmd = ["mmdebstrap", "--quiet", f"--variant={SPEC.variant}",
           f"--include={','.join(BASE_PACKAGES)}", SPEC.suite, str(target), *src.lines]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def bench_build(rounds: int) -> tuple[list[float], list[float], list[float]]:
    """virtmix's first build as an unprivileged container needs it (built, customised and
    shifted by 100000 in one go) beside plain mmdebstrap, alternating to share the noise.

    Downloads dominate and vary a lot between runs, so virtmix's own overhead (everything
    but its mmdebstrap run, from entry.json) is reported too: that part is deterministic.
    """
    ours, plain, overhead = [], [], []
    for i in range(rounds):
        st = Storage(ROOT / f"build-{i}")
        t0 = time.monotonic()
        base = ensure_base(SPEC, st, shift=IDMAP_OFFSET)
        ours.append(time.monotonic() - t0)
        meta = json.loads((base.path / "entry.json").read_text())
        overhead.append(ours[-1] - meta["builder_seconds"])
        if i < rounds - 1:  # the last one is the cache of the container runs
            shutil.rmtree(st.root)
        target = ROOT / f"plain-{i}"
        plain.append(plain_mmdebstrap(target))
        shutil.rmtree(target)
    return ours, plain, overhead


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def pss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def one_container(conn, st: Storage, name: str) -> tuple[float, float, str]:
    """Provision, define, start, wait for systemd: (total s, provision s, state)."""
    t0 = time.monotonic()
    r = provision_container(name, SPEC, ContainerSetup(name=name), st)
    t1 = time.monotonic()
    dom = conn.defineXML(lxchelp.domain_xml(name, str(r.path), r.idmap))
    dom.create()
    state, _ = lxchelp.wait_running(conn, name, timeout=60)
    return time.monotonic() - t0, t1 - t0, state


def teardown(conn, st: Storage, names: list[str]) -> float:
    t0 = time.monotonic()
    for n in names:
        lxchelp.destroy_undefine(conn, n)
        with contextlib.suppress(VirtmixError):
            remove_container_tree(st, n)
    return (time.monotonic() - t0) / max(1, len(names))


def bench_containers(count: int, workers: int, st: Storage) -> dict:
    ensure_base(SPEC, st, shift=IDMAP_OFFSET)  # the cache (already built by bench_build)
    conn = lxchelp.connect()
    names = [f"{PREFIX}{i:02d}" for i in range(count)]
    res: dict = {}
    try:
        t0 = time.monotonic()
        seq = [one_container(conn, st, n) for n in names]
        res["seq_wall"] = time.monotonic() - t0
        res["seq"] = seq
        time.sleep(3)  # let the containers go idle before measuring memory
        pss, pss_ctl = [], []
        for n in names:
            ctl = conn.lookupByName(n).ID()
            procs = descendants(ctl)
            pss.append(pss_kib(procs[1:]))  # the container's processes
            pss_ctl.append(pss_kib(procs))  # plus its libvirt_lxc controller
        res["pss"], res["pss_ctl"] = pss, pss_ctl
        # What each container adds on disk: its overlay upper and work dirs (the merged
        # rootfs view would count the shared base again).
        res["disk"] = [disk_usage(st.container_dir(n) / "upper")
                       + disk_usage(st.container_dir(n) / "work") for n in names]
        res["destroy"] = teardown(conn, st, names)

        t0 = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            par = list(pool.map(lambda n: one_container(lxchelp.connect(), st, n), names))
        res["par_wall"] = time.monotonic() - t0
        res["par"] = par
    finally:
        teardown(conn, st, names)
        conn.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--builds", type=int, default=1, help="build rounds (each ~2 x 15 s)")
    args = ap.parse_args()
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    try:
        ours, plain, overhead = bench_build(args.builds)
        r = bench_containers(args.count, args.workers, Storage(ROOT / f"build-{args.builds - 1}"))
    finally:
        subprocess.run(["umount", "-R", "-q", str(ROOT)], check=False)
        shutil.rmtree(ROOT, ignore_errors=True)
    med = statistics.median
    print("virtmix rootfs benchmark (bookworm minbase + systemd-sysv)")
    print(f"  first build, virtmix (shifted)   : {med(ours):6.1f} s  (runs: "
          f"{', '.join(f'{x:.1f}' for x in ours)})")
    print(f"  plain mmdebstrap, same spec      : {med(plain):6.1f} s  (runs: "
          f"{', '.join(f'{x:.1f}' for x in plain)})")
    print(f"  ratio of medians                 : {med(ours) / med(plain):6.2f} x  (target <= 1.15)")
    print(f"  virtmix overhead beyond mmdebstrap: {med(overhead):5.1f} s  (prepare, shift, "
          f"promote) = {(med(plain) + med(overhead)) / med(plain):.3f} x of plain")
    for key, label in (("seq", "sequential"), ("par", f"{args.workers} parallel")):
        runs = r[key]
        states = {s for _, _, s in runs}
        print(f"  {args.count} containers cache->running, {label}: wall {r[key + '_wall']:.2f} s,"
              f" {r[key + '_wall'] / args.count:.3f} s/container (states: {sorted(states)})")
        if key == "seq":
            print(f"    per container: median {med(t for t, _, _ in runs):.3f} s, max "
                  f"{max(t for t, _, _ in runs):.3f} s; provision (clone+customise) median "
                  f"{med(p for _, p, _ in runs):.3f} s")
    print(f"  disk per container (overlay upper): median {med(r['disk']) / 1024:.0f} KiB")
    print(f"  PSS per idle container: median {med(r['pss']) / 1024:.1f} MiB "
          f"(+ libvirt_lxc controller: {med(r['pss_ctl']) / 1024:.1f} MiB)")
    print(f"  destroy + undefine + remove tree: {r['destroy']:.2f} s per container")
    return 0


if __name__ == "__main__":
    sys.exit(main())
