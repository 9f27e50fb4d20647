"""What isolated id ranges cost: making the lower layer for a container's own range.

Each unprivileged container gets its own host id range (virtmix.util.idranges), so its
base must be owned by that range: a copy of the cached base shifted once per range (cache
entry KEY-uN), where before one KEY-u100000 served every container. This times, on a copy
of a cached Debian base (default: the rootfs tests' bookworm minbase), the three ways
ensure_lower makes it, and the disk it takes:

  plain copy (cp -a, the floor)  |  copy + shift from the unshifted base  |
  copy + re-shift from another range's copy (no unshifted base cached)

Run as root: .venv/bin/python benchmarks/idmap_bench.py [--base CACHE_ENTRY_DIR] [--runs 3].
Works in /var/tmp/vmixt-idmap-bench (removed at the end); never touches the source cache.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtmix.rootfs.build import BaseTree, ensure_shifted  # noqa: E402
from virtmix.rootfs.cache import disk_usage  # noqa: E402
from virtmix.rootfs.storage import CACHE_MARKER, Storage  # noqa: E402
from virtmix.util.idranges import slot_range  # noqa: E402

WORK = Path("/var/tmp/vmixt-idmap-bench")


def default_base() -> Path:
    for p in sorted(glob.glob("/var/tmp/virtmix-test-rootfs/shared/cache/debian-bookworm-*")):
        meta = Path(p) / CACHE_MARKER
        if meta.is_file() and json.loads(meta.read_text()).get("kind") == "base":
            return Path(p)
    sys.exit("no cached bookworm base found: pass --base /path/to/cache/ENTRY")


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    src = args.base or default_base()
    shutil.rmtree(WORK, ignore_errors=True)
    storage = Storage(WORK)
    storage.ensure()
    try:
        key = src.name
        subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(storage.cache_entry(key))],
                       check=True)
        base = BaseTree(key, storage.cache_entry(key), cached=True)
        size = disk_usage(base.tree)
        plain, shifted, reshifted = [], [], []
        for i in range(args.runs):
            dst = WORK / f"plain-{i}"
            plain.append(timed(lambda d=dst: subprocess.run(
                ["cp", "-a", "--reflink=auto", str(base.tree), str(d)], check=True)))
            shutil.rmtree(dst)
            r1, r2 = slot_range(100 + 2 * i), slot_range(101 + 2 * i)
            shifted.append(timed(lambda r=r1: ensure_shifted(base, storage, r[1])))
            first = storage.cache_entry(f"{key}-u{r1[1]}")
            sibling = BaseTree(first.name, first, cached=True)
            reshifted.append(timed(lambda r=r2, s=sibling, q=r1: ensure_shifted(
                s, storage, r[1], source=(q[1], q[3], q[2]), key=key)))
        print(f"base {src} ({size / 2**20:.0f} MiB allocated), median of {args.runs}:")
        print(f"  plain copy (cp -a --reflink=auto)       {statistics.median(plain):6.2f} s")
        print(f"  copy + shift from the unshifted base    {statistics.median(shifted):6.2f} s")
        print(f"  copy + re-shift from another range      {statistics.median(reshifted):6.2f} s")
        print(f"  disk per range (one cache entry each)   {size / 2**20:6.0f} MiB")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
