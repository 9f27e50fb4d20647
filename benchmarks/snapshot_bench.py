"""Benchmark of snapshots and backups on the real libvirtd, beside the plain tools.

N Debian containers (unprivileged overlay clones from the cached bookworm base, systemd
running) get one `virtmix snapshot c1 .. cN` (all frozen at one moment), then one
`virtmix snapshot restore` per container; a backup of one container is timed beside
`tar -cf` of the same tree and `cp -a` of the same upper layer (what lxc-copy does).

Run as root on a host prepared by scripts/setup-host.sh:
    .venv/bin/python benchmarks/snapshot_bench.py [--count 20]
Uses /var/tmp/virtmix-bench-snap (removed at the end) and domains vmixt-rootfs-snapb-*.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
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

ROOT = Path("/var/tmp/virtmix-bench-snap")
PREFIX = "vmixt-rootfs-snapb-"
CACHE = Path("/var/tmp/virtmix-test-rootfs/shared")  # the tests' base cache, if built


def virtmix(*args: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "virtmix", "-c", lxchelp.URI, "--quiet", *args],
                   check=True, cwd=REPO)
    return time.monotonic() - t0


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    n = ap.parse_args().count
    st = Storage(ROOT)
    st.ensure()
    if (CACHE / "cache").is_dir() and not any((ROOT / "cache").iterdir()):
        for entry in (CACHE / "cache").iterdir():  # reuse the tests' base instead of a build
            if not entry.name.startswith("."):
                subprocess.run(["cp", "-a", "--reflink=auto", str(entry), str(ROOT / "cache")],
                               check=False)
    conn = lxchelp.connect()
    names = [f"{PREFIX}{i:02d}" for i in range(n)]
    try:
        for name in names:
            r = provision_container(name, RootfsSpec(suite="bookworm"),
                                    ContainerSetup(name=name), st, privileged=False)
            lxchelp.destroy_undefine(conn, name)
            conn.defineXML(lxchelp.domain_xml(name, str(r.path), r.idmap)).create()
        for name in names:
            lxchelp.wait_running(conn, name, timeout=120)
        upper_mib = sum(f.stat().st_size for f in (st.container_dir(names[0]) / "upper")
                        .rglob("*") if f.is_file()) / 2**20

        snap = virtmix("snapshot", *names, "--name", "b1")
        restore = [virtmix("snapshot", "restore", name, "b1") for name in names[:5]]
        plain_cp = timed(["cp", "-a", str(st.container_dir(names[0]) / "upper"),
                          str(ROOT / "plain-cp")])
        bk = virtmix("backup", names[1], "--to", str(ROOT / "backups"))
        tree = st.tree_dir(names[1])
        plain_tar = timed(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf",
                           str(ROOT / "plain.tar"), "."])
        size = next((ROOT / "backups").glob("*.tar")).stat().st_size / 2**20
        print(f"containers: {n} running Debian (systemd), overlay clones; upper layer "
              f"{upper_mib:.1f} MiB each")
        print(f"virtmix snapshot of all {n} at one moment: {snap:.2f} s "
              f"(one cp -a of one upper layer: {plain_cp * 1000:.0f} ms)")
        print(f"virtmix snapshot restore, one container: min {min(restore):.2f} s, "
              f"max {max(restore):.2f} s (includes destroy + start; systemd boot not waited)")
        print(f"virtmix backup of one container ({size:.0f} MiB archive): {bk:.2f} s; "
              f"tar -cf of the same tree: {plain_tar:.2f} s")
    finally:
        for name in names:
            lxchelp.destroy_undefine(conn, name)
            with contextlib.suppress(VirtmixError):
                remove_container_tree(st, name)
        conn.close()
        shutil.rmtree(ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
