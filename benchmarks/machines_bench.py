"""Benchmark metrics, completion and watch (issue 15), beside the virsh equivalents.

1. scrape: `virtmix metrics`' scrape of 200 domains (test driver, in process, median of 7)
   vs one `virsh domstats` of all of them and a loop of `virsh domstats NAME` over them.
   Target: under 100 ms. With `live`: the same against 200 busybox containers on the real
   LXC driver, 10 of them running (their figures come from cgroups), 190 stopped.
2. completion: `virtmix -c test://node start web-4<TAB>` with 500 domains on the connection,
   as bash runs it (typer's env protocol, a new process each time). Target: under 200 ms.
3. watch (live only): time from `virsh destroy` of a busybox container to the drift line
   of `virtmix watch -o json`, from the start of the virsh call and from its return.

Run: `python benchmarks/machines_bench.py [live]` (live: as root, real libvirtd, under the
live-test lock; makes vmixt-mach-bench* containers and removes them).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from virtmix.admin.targets import Session  # noqa: E402
from virtmix.machines.metrics import scrape  # noqa: E402
from virtmix.util.identity import VIRTMIX_NS  # noqa: E402

SCRAPE_N, COMPLETE_N, LIVE_N, LIVE_RUNNING = 200, 500, 200, 10
MAIN = [sys.executable, "-c", "from virtmix.cli import main; main()"]
PFX = "vmixt-mach-bench"


def test_node(work: Path, n: int, prefix: str = "web-") -> str:
    doms = "".join(
        f"<domain type='test'><name>{prefix}{i:03d}</name><memory>65536</memory><metadata>"
        f"<v:entry xmlns:v='{VIRTMIX_NS}' site='bench' host='hv1' name='{prefix}{i:03d}' "
        f"kind='guest'/></metadata><os><type>hvm</type></os></domain>" for i in range(n))
    path = work / f"node{n}.xml"
    path.write_text(f"<node>{doms}</node>")
    return f"test://{path}"


def timed(argv: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=env, check=False)
    return time.perf_counter() - t0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def bench_scrape(uri: str, names: list[str], label: str) -> None:
    session = Session(connect=uri)
    try:
        runs = [scrape(session).seconds for _ in range(7)]
        rows = len(scrape(session).rows)
    finally:
        session.close()
    bulk_ok = subprocess.run(["virsh", "-c", uri, "domstats"], capture_output=True
                             ).returncode == 0
    one = statistics.median(timed(["virsh", "-c", uri, "domstats"]) for _ in range(3))
    # The LXC driver has no bulk stats call (`virsh domstats` fails there): the per-domain
    # virsh equivalent is then `dominfo` (state, CPU time, memory).
    per = "domstats" if bulk_ok else "dominfo"
    t0 = time.perf_counter()
    for name in names:
        subprocess.run(["virsh", "-c", uri, per, name], capture_output=True)
    loop = time.perf_counter() - t0
    print(f"scrape, {label}: {rows} domains")
    print(f"  virtmix scrape (median of 7)         {ms(statistics.median(runs))}"
          f"   (best {ms(min(runs)).strip()})")
    print(f"  virsh domstats (all, one process)    {ms(one)}"
          + ("" if bulk_ok else "   (fails: the driver has no bulk call)"))
    print(f"  virsh {per} NAME loop ({len(names)})        {ms(loop)}")


def bench_completion(uri: str) -> None:
    env = {**os.environ, "_VIRTMIX_COMPLETE": "complete_bash",
           "COMP_WORDS": f"virtmix -c {uri} start web-4", "COMP_CWORD": "4"}
    runs = [timed(MAIN, env) for _ in range(7)]
    out = subprocess.run(MAIN, capture_output=True, text=True, env=env).stdout.split()
    print(f"completion, {COMPLETE_N} domains on the connection ({len(out)} offered)")
    print(f"  virtmix start web-4<TAB> (median of 7) {ms(statistics.median(runs))}"
          f"   (best {ms(min(runs)).strip()})")
    plain = [timed([sys.executable, "-c", "pass"]) for _ in range(7)]
    print(f"  (python start-up alone                 {ms(statistics.median(plain))})")


def _live_site(work: Path, n: int) -> Path:
    from support import build_busybox_tree

    tree = build_busybox_tree(work / "root")
    # LIVE_RUNNING busybox containers run (cgroup figures); the rest are defined, stopped.
    containers = {f"{PFX}{i:03d}": {"rootfs": {"path": str(tree)}, "memory": "64MiB",
                                    "state": "running" if i < LIVE_RUNNING else "stopped"}
                  for i in range(n)}
    doc = {"name": PFX, "settings": {"storage_dir": str(work / "storage")},
           "hosts": {"h1": {"uri": "qemu:///system", "lxc_uri": "lxc:///system",
                            "containers": containers}}}
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bench_watch(inv: Path, name: str) -> None:
    proc = subprocess.Popen([*MAIN, "-i", str(inv), "watch", "-o", "json", "--drift-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        while "watching" not in proc.stderr.readline():
            pass
        lat_start, lat_done = [], []
        for run in range(3):
            if run:  # apply started it the first time
                subprocess.run([*MAIN, "start", name], capture_output=True, check=True)
            time.sleep(2.5)  # past the slack of virtmix's own start
            t0 = time.perf_counter()
            subprocess.run(["virsh", "-c", "lxc:///system", "destroy", name],
                           capture_output=True, check=True)
            t1 = time.perf_counter()
            try:
                rec = json.loads(lines.get(timeout=5))
            except queue.Empty:
                rec = None
            t2 = time.perf_counter()
            if not rec or not rec["drift"]:
                print(f"  watch: no drift event within 5 s ({rec})")
                return
            lat_start.append(t2 - t0)
            lat_done.append(max(0.0, t2 - t1))
        print("watch: virsh destroy of a busybox container -> drift line (3 runs, median)")
        print(f"  from the start of virsh destroy      {ms(statistics.median(lat_start))}")
        print(f"  from its return (domain gone)        {ms(statistics.median(lat_done))}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def live(work: Path) -> None:
    inv = _live_site(work, LIVE_N)
    cli = [*MAIN]
    subprocess.run([*cli, "apply", str(inv), "--yes", "-q"], check=True, capture_output=True)
    try:
        names = [f"{PFX}{i:03d}" for i in range(LIVE_N)]
        bench_scrape("lxc:///system", names, f"real LXC driver ({LIVE_RUNNING} of ours "
                     "running, figures from cgroups; the rest defined and stopped)")
        bench_watch(inv, names[0])
    finally:
        subprocess.run([*cli, "destroy", str(inv), "--yes", "-q"], capture_output=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    work.chmod(0o755)
    try:
        uri = test_node(work, SCRAPE_N)
        bench_scrape(uri, [f"web-{i:03d}" for i in range(SCRAPE_N)], "test driver")
        bench_completion(test_node(work, COMPLETE_N))
        if "live" in sys.argv[1:]:
            live(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
