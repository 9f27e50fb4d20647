#!/usr/bin/env python3
"""Core pipeline benchmark: load + validate + render + RelaxNG check of a large inventory.

Generates an inventory of 10,000 containers and 1,000 KVM guests on 10 hosts (with profiles,
cgroup keys, interfaces) and times each step. Targets on a 2-core machine: the whole pipeline
under 3 s; rendering alone above 20,000 domains/s.

    .venv/bin/python benchmarks/core_bench.py [--containers N] [--guests N] [--hosts N]
        [--no-fast-yaml] [--user-templates]

--no-fast-yaml loads with PyYAML alone, as without the optional `fast-yaml` extra
(pyyaml-rs), to measure what that extra gains.


--user-templates renders through a `templates_dir` (a copy of the shipped templates), which
virtmix renders in jinja2's sandbox (SECURITY.md): the cost of the sandbox.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if "--no-fast-yaml" in sys.argv:
    sys.modules["pyyaml_rs"] = None  # type: ignore[assignment]  # import now fails

from virtmix.inventory import yamlio  # noqa: E402
from virtmix.inventory.load import load_site  # noqa: E402
from virtmix.render.schema_check import relaxng  # noqa: E402
from virtmix.render.templates import environment, render_all  # noqa: E402
from virtmix.util.gcpause import gc_paused  # noqa: E402


def make_inventory(containers: int, guests: int, hosts: int) -> dict:
    inv: dict = {"name": "bench", "networks": {}, "hosts": {}}
    for h in range(hosts):
        host = f"hv{h}"
        inv["networks"][f"lan{h}"] = {"host": host, "mode": "isolated", "bridge": f"vmixb{h}",
                                      "ipv4": f"10.{h}.0.1/16", "dhcp": True}
        hdef = {"uri": f"qemu+ssh://root@{host}/system", "lxc_uri": f"lxc+ssh://root@{host}/system",
                "cpus": "0-15", "containers": {}, "guests": {}}
        for c in range(containers // hosts):
            entry: dict = {"profile": ["apache", "mysql-small", "debian"][c % 3],
                           "memory": f"{128 + c % 4 * 64}MiB",
                           "interfaces": [{"network": f"lan{h}"}]}
            if c % 2:
                entry["cgroup"] = {"cpu.shares": 512 + c % 7, "cpuset.cpus": str(c % 16)}
            else:
                entry["cpu"] = {"cpuset": f"{c % 8}-{c % 8 + 7}", "shares": 1024 + c % 5}
            hdef["containers"][f"c{h}-{c}"] = entry
        for g in range(guests // hosts):
            hdef["guests"][f"g{h}-{g}"] = {
                "profile": "kvm-small", "vcpus": 2, "memory": "2GiB",
                "cpu": {"cpuset": "0-15", "vcpupin": {0: str(g % 16), 1: str((g + 1) % 16)}},
                "disks": [{"size": "8GiB"}],
                "interfaces": [{"network": f"lan{h}",
                                "ipv4": f"10.{h}.{1 + g // 250}.{1 + g % 250}/16"}]}
        inv["hosts"][host] = hdef
    return inv


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=10000)
    ap.add_argument("--guests", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-fast-yaml", action="store_true",
                    help="PyYAML only (as without the fast-yaml extra)")
    ap.add_argument("--user-templates", action="store_true",
                    help="render through a templates_dir (the sandboxed environment)")
    ap.add_argument("--workers", type=int, default=None,
                    help="render/check worker processes (default: virtmix's own choice)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.yaml"
        inv = make_inventory(args.containers, args.guests, args.hosts)
        if args.user_templates:
            shutil.copytree(Path(__file__).resolve().parent.parent / "domain_templates",
                            Path(tmp) / "tpl")
            inv["templates_dir"] = "tpl"
        path.write_text(yaml.safe_dump(inv, sort_keys=False))
        size_mb = path.stat().st_size / 1e6
        runs = []
        text = path.read_text()
        with gc_paused():  # as load_site reads it
            parse = statistics.median(timed(lambda: yamlio.read_yaml(path))[1]
                                      for _ in range(args.repeat))
        fast = yamlio.fast_loader_available() and not yamlio._version_sensitive(text)
        for _ in range(args.repeat):
            # What `virtmix validate` does: load + validate, render, RelaxNG-check everything
            # (schema compilation included, as in a fresh process).
            relaxng.cache_clear()
            environment.cache_clear()
            cpu0 = time.process_time()
            site, t_load = timed(lambda: load_site(path))
            docs, t_pipe = timed(lambda s=site: render_all(s, check=True, workers=args.workers))
            cpu = time.process_time() - cpu0
            _, t_render = timed(lambda s=site: render_all(s, check=False, workers=args.workers))
            runs.append((t_load, t_render, t_pipe, cpu))

    n = len(site.entries)
    load, rend, pipe, cpu = (statistics.median(r[i] for r in runs) for i in range(4))
    print(f"inventory: {args.containers} containers + {args.guests} guests on {args.hosts} hosts "
          f"({n} domains + {len(site.networks)} networks, {size_mb:.1f} MB YAML), "
          f"median of {args.repeat} runs, load average {os.getloadavg()[0]:.2f}"
          + (", user templates (sandboxed)" if args.user_templates else ""))
    print(f"  YAML parse alone         : {parse:6.3f} s  "
          f"({'pyyaml-rs' if fast else 'PyYAML (libyaml)'})")
    print(f"  load + validate          : {load:6.3f} s")
    print(f"  render alone             : {rend:6.3f} s  ({n / rend:,.0f} domains/s; "
          "target > 20,000)")
    print(f"  render + RelaxNG check   : {pipe:6.3f} s  ({len(docs) / pipe:,.0f} documents/s)")
    print(f"  whole pipeline           : {load + pipe:6.3f} s  (target < 3 s; CPU time of this "
          f"process {cpu:.3f} s, workers not counted)")


if __name__ == "__main__":
    main()
