#!/usr/bin/env python3
"""Hostile-input benchmark (SECURITY.md, "bounded work").

1. A YAML alias bomb of a few hundred bytes ("billion laughs", 9 levels of 9 aliases) must be
   refused in under a second: timed as `virtmix validate` in a fresh process, exit code 3.
2. A ~10 MB inventory of 85,000 containers must validate in under 5 s with under 1 GB
   resident memory. Each run is a fresh subprocess whose peak RSS is read with
   resource.getrusage(RUSAGE_CHILDREN). Two figures: loading and checking the inventory
   (load_site: YAML, every key and string, the model, site-wide conflicts, warnings), and the
   whole `virtmix validate` (that, plus rendering and RelaxNG-checking 85,000 documents),
   timed from the interpreter's start to its exit, as `/usr/bin/time virtmix validate` does.
   validate is run --runs times (default 3; the machine is shared): the median wall time is
   held against the target, and the largest peak RSS of any of its processes.

    .venv/bin/python benchmarks/hostile_bench.py [--containers N] [--runs N] [--skip-cli]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)))


def make_inventory(path: Path, containers: int, hosts: int = 10) -> None:
    """Short, realistic entries: a memory cap, a cpuset and shares, a description."""
    lines = ["name: big", "networks:",
             "  lan0: {host: h0, mode: isolated, bridge: vmixbig0, ipv4: 10.0.0.1/8, dhcp: true}",
             "hosts:"]
    for h in range(hosts):
        lines += [f"  h{h}:", f"    uri: qemu+ssh://root@h{h}.example.org/system",
                  f"    lxc_uri: lxc+ssh://root@h{h}.example.org/system", "    containers:"]
        for c in range(containers // hosts):
            lines.append(f"      c{h}-{c}: {{memory: {128 + c % 4 * 64}MiB, cpu: {{cpuset: "
                         f"'{c % 8}-{c % 8 + 3}', shares: {1000 + c % 7}}}, description: "
                         f"container number {c} of host {h}}}")
    path.write_text("\n".join(lines) + "\n")


def measured(argv: list[str]) -> tuple[int, float, float, float, str]:
    """(exit code, wall seconds, CPU seconds, peak RSS MiB, stderr) of one child process.

    One child per call; RUSAGE_CHILDREN's ru_maxrss is the largest of all waited-for
    children so far, so runs go from the smallest expected to the largest."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # cwd: `python -m virtmix` puts the working directory first on sys.path, before
    # PYTHONPATH; run from another checkout, it would time that checkout's code.
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=REPO)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage.ru_utime - before.ru_utime) + (usage.ru_stime - before.ru_stime)
    return proc.returncode, wall, cpu, usage.ru_maxrss / 1024, proc.stderr


LOAD_ONLY = ("import sys, time\nfrom virtmix.inventory.load import load_site\n"
             "t = time.perf_counter(); s = load_site(sys.argv[1])\n"
             "print(len(s.entries), time.perf_counter() - t)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=85000)
    ap.add_argument("--skip-cli", action="store_true", help="only the load figure")
    ap.add_argument("--runs", type=int, default=3, help="validate runs (median wall time)")
    args = ap.parse_args()
    py = sys.executable
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(BOMB)
        rc, wall, cpu, rss, err = measured([py, "-m", "virtmix", "validate", str(bomb)])
        verdict = "ok" if rc == 3 and wall < 1.0 else "FAIL"
        print(f"alias bomb ({len(BOMB)} bytes): exit {rc} in {wall:.3f} s ({cpu:.3f} s CPU), "
              f"peak RSS {rss:.0f} MiB (target: refused, exit 3, < 1 s) {verdict}")
        print(f"  {err.strip().splitlines()[0] if err.strip() else ''}")

        big = Path(tmp) / "big.yaml"
        make_inventory(big, args.containers)
        size = big.stat().st_size / 1e6
        rc, wall, cpu, rss, err = measured([py, "-c", LOAD_ONLY, str(big)])
        verdict = "ok" if rc == 0 and wall < 5.0 and rss < 1024 else "FAIL"
        print(f"{args.containers} containers ({size:.1f} MB): load_site (inventory checks) exit "
              f"{rc} in {wall:.2f} s ({cpu:.2f} s CPU), peak RSS {rss:.0f} MiB "
              f"(target < 5 s, < 1024 MiB) {verdict}")
        if not args.skip_cli:
            runs = [measured([py, "-m", "virtmix", "validate", str(big)])
                    for _ in range(max(args.runs, 1))]
            walls = sorted(r[1] for r in runs)
            wall, cpu = statistics.median(walls), statistics.median(r[2] for r in runs)
            rss = max(r[3] for r in runs)
            codes = sorted({r[0] for r in runs})
            verdict = "ok" if codes == [0] and wall < 5.0 and rss < 1024 else "over target"
            print(f"{args.containers} containers ({size:.1f} MB): virtmix validate (+ render "
                  f"and RelaxNG check of every document) exit {'/'.join(map(str, codes))} in "
                  f"{wall:.2f} s (median of {len(runs)}: {', '.join(f'{w:.2f}' for w in walls)}"
                  f"; {cpu:.2f} s CPU, workers included), peak RSS {rss:.0f} MiB (of the "
                  f"largest process; render workers are forked) (target < 5 s, < 1024 MiB) "
                  f"{verdict}")
            print(f"  load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
