"""Benchmark plan and apply against the real libvirtd, beside the equivalent virsh loops.

1. A no-op plan over 500 defined (stopped) containers, inventory load included, in process
   and as a `virtmix plan` command, vs `virsh dumpxml` of the same 500 domains.
   Targets: under 0.5 s, and at least 15x faster than the virsh loop.
2. apply of 50 busybox containers (define + start) as a `virtmix apply` command, vs a
   `virsh define` + `virsh start` loop over the same documents. Target: 1.5x faster.

Run as root on a host prepared by scripts/setup-host.sh: `python benchmarks/apply_bench.py
[plan|apply]` (both by default).
Everything it makes is named vmixt-apply-bench* / vmixt-apply-vbench* and removed at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtmix.backend import open_connection  # noqa: E402
from virtmix.converge.apply import close_all, observe_and_plan  # noqa: E402
from virtmix.converge.desired import desired_documents  # noqa: E402
from virtmix.converge.plan import Options  # noqa: E402
from virtmix.inventory.load import load_site  # noqa: E402
from virtmix.render.templates import render_domain  # noqa: E402

LXC = "lxc:///system"
PLAN_N, APPLY_N = 500, 50
VIRTMIX = [str(Path(sys.executable).parent / "virtmix")]


def inventory(work: Path, tree: Path, prefix: str, count: int, state: str) -> Path:
    containers = {f"{prefix}{i:03d}": {"rootfs": {"path": str(tree)}, "memory": "64MiB",
                                        "state": state} for i in range(count)}
    doc = {"name": prefix.rstrip("-"), "settings": {"storage_dir": str(work / "storage")},
           "hosts": {"h1": {"lxc_uri": LXC, "containers": containers}}}
    path = work / f"{prefix}site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cleanup(prefix: str) -> None:
    """Destroy and undefine every domain named prefix*, in parallel (LXC destroy is slow)."""
    conn = open_connection(LXC)
    names = [d.name for d in conn.list_domains() if d.name.startswith(prefix)]

    def one(name: str) -> None:
        rec = conn.get(name)
        if rec.active:
            conn.destroy(name)
        conn.undefine(name)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, names))
    conn.close()


def run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[:3])}... exited {proc.returncode}: {proc.stderr}")
    return took


def bench_plan(work: Path, tree: Path) -> dict[str, float]:
    prefix = "vmixt-apply-bench-"
    inv = inventory(work, tree, prefix, PLAN_N, "stopped")
    run(VIRTMIX + ["--quiet", "apply", str(inv), "--yes"])  # define the 500
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        site = load_site(inv)
        domains, networks = desired_documents(site)
        plan, conns = observe_and_plan(site, domains, networks, Options())
        times.append(time.perf_counter() - t0)
        close_all(conns)
        assert not plan.pending, [i.name for i in plan.pending][:5]
    cli = min(run(VIRTMIX + ["plan", str(inv)]) for _ in range(3))
    names = [f"{prefix}{i:03d}" for i in range(PLAN_N)]
    t0 = time.perf_counter()
    for n in names:
        subprocess.run(["virsh", "-c", LXC, "dumpxml", "--inactive", n], capture_output=True,
                       check=True)
    virsh = time.perf_counter() - t0
    cleanup(prefix)
    return {"plan_inprocess": sorted(times)[len(times) // 2], "plan_cli": cli, "virsh": virsh}


def bench_apply(work: Path, tree: Path) -> dict[str, float]:
    prefix, vprefix = "vmixt-apply-bench-", "vmixt-apply-vbench-"
    inv = inventory(work, tree, prefix, APPLY_N, "running")
    mine = run(VIRTMIX + ["--quiet", "apply", str(inv), "--yes"])
    cleanup(prefix)
    # The same documents, renamed, through virsh.
    vinv = inventory(work, tree, vprefix, APPLY_N, "running")
    site = load_site(vinv)
    files = []
    for e in site.entries:
        f = work / f"{e.name}.xml"
        f.write_text(render_domain(site, e))
        files.append((e.name, f))
    t0 = time.perf_counter()
    for name, f in files:
        subprocess.run(["virsh", "-c", LXC, "define", str(f)], capture_output=True, check=True)
        subprocess.run(["virsh", "-c", LXC, "start", name], capture_output=True, check=True)
    virsh = time.perf_counter() - t0
    cleanup(vprefix)
    return {"apply_cli": mine, "virsh": virsh}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vmixt-apply-bench-", dir="/var/tmp"))
    work.chmod(0o755)
    tree = work / "busybox"
    subprocess.run(["bash", str(REPO / "scripts/make-busybox-rootfs.sh"), str(tree)],
                   check=True, capture_output=True)
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        p = bench_plan(work, tree) if only in ("", "plan") else None
        a = bench_apply(work, tree) if only in ("", "apply") else None
    finally:
        cleanup("vmixt-apply-bench-")
        cleanup("vmixt-apply-vbench-")
        shutil.rmtree(work, ignore_errors=True)
    if p:
        print_plan(p)
    if a:
        print_apply(a)


def print_plan(p: dict[str, float]) -> None:
    print(f"no-op plan, {PLAN_N} defined containers (inventory load included):")
    print(f"  virtmix plan, in process (median of 5)  {p['plan_inprocess']:7.3f} s")
    print(f"  virtmix plan, CLI process (best of 3)   {p['plan_cli']:7.3f} s")
    print(f"  virsh dumpxml loop                      {p['virsh']:7.3f} s")
    print(f"  speed-up: {p['virsh'] / p['plan_inprocess']:.1f}x in process, "
          f"{p['virsh'] / p['plan_cli']:.1f}x as a command (target: 15x, under 0.5 s)")


def print_apply(a: dict[str, float]) -> None:
    print(f"apply of {APPLY_N} busybox containers (define + start):")
    print(f"  virtmix apply, CLI process              {a['apply_cli']:7.3f} s")
    print(f"  virsh define + virsh start loop         {a['virsh']:7.3f} s")
    print(f"  speed-up: {a['virsh'] / a['apply_cli']:.1f}x (target: 1.5x)")


if __name__ == "__main__":
    main()
