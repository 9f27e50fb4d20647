"""Fleet simulation: plan and apply of 100 hosts x 100 domains with placement.

libvirt's test driver gives one process as many independent "hosts" as wanted: each
`test:///PATH` URI is its own hypervisor, described by its node XML file (memory, CPUs).
This writes 100 such files (each host with its own memory and CPU count), an inventory of
10,000 containers that all say `host: auto` (some in anti-affinity groups, some `pack`),
with `max_domains: 100` on every host, and then, on connections kept open (the test
driver's state lives as long as its connection):

1. plan: load + read every host + place + render + compare (target: under 3 s);
2. apply of that plan in parallel across hosts (virtmix's default), and, on fresh
   connections, the same plan applied host by host; the ratio is reported.

Nothing touches a real daemon. `python benchmarks/fleet.py [--hosts 100] [--per-host 100]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtmix.backend import open_connection  # noqa: E402
from virtmix.converge.apply import (  # noqa: E402
    Context,
    close_all,
    observe_and_plan,
    run_host,
    run_plan,  # noqa: E402
)
from virtmix.converge.desired import desired_documents  # noqa: E402
from virtmix.converge.placement import observe_and_place, place_site  # noqa: E402
from virtmix.converge.plan import Options, Plan  # noqa: E402
from virtmix.inventory.load import load_site  # noqa: E402
from virtmix.inventory.site import Site  # noqa: E402

GIB = 1024 * 1024


def write_fleet(work: Path, hosts: int, per_host: int) -> Path:
    """Node files with varied memory/CPUs, and an inventory placing hosts*per_host entries."""
    rnd = random.Random(13)
    tree = work / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "sbin" / "init").write_text("#!/bin/sh\n")
    hs = {}
    for i in range(hosts):
        cpus = rnd.choice((8, 16, 32, 64))
        mem_gib = rnd.choice((32, 64, 128, 256))
        node = work / f"hv{i:03d}.xml"
        node.write_text(
            f"<node><cpu><mhz>2000</mhz><model>fleet</model><active>{cpus}</active>"
            f"<total>{cpus}</total><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
            f"<threads>1</threads></cpu><memory>{mem_gib * GIB}</memory></node>\n")
        uri = f"test://{node}"
        hs[f"hv{i:03d}"] = {"uri": uri, "lxc_uri": uri, "virt_type": "qemu",
                            "max_domains": per_host, "group": f"rack{i % 10}"}
    containers = {}
    for n in range(hosts * per_host):
        spec: dict = {"rootfs": {"path": str(tree)}, "memory": f"{rnd.choice((64, 128, 256))}MiB",
                      "host": "auto"}
        if n % 50 == 0:  # one small anti-affinity group per 50 entries: members apart
            spec["anti_affinity"] = f"db{n // 500}"
        if n % 7 == 0:
            spec["placement"] = "pack"
        containers[f"fleet{n:05d}"] = spec
    doc = {"name": "fleet", "settings": {"storage_dir": str(work / "storage")},
           "hosts": hs, "containers": containers}
    inv = work / "fleet.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    return inv


def open_fleet(site: Site) -> dict:
    return {h.uri: open_connection(h.uri) for h in site.inventory.hosts.values()}


def plan_on(inv: Path, conns: dict) -> tuple[Site, Plan, dict[str, float]]:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    site = load_site(inv)
    t["load"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    loaded = site
    site, read_conns, observed = observe_and_place(site, read=conns)
    t["read + place"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    place_site(loaded, observed)  # the placement step alone, again on what was read
    t["(place alone)"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    domains, networks = desired_documents(site)
    t["render"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    plan, _ = observe_and_plan(site, domains, networks, Options(),
                               read=(read_conns, observed))
    t["compare"] = time.perf_counter() - t1
    t["plan total"] = time.perf_counter() - t0 - t["(place alone)"]
    return site, plan, t


def apply_parallel(site: Site, plan: Plan, conns: dict) -> float:
    t0 = time.perf_counter()
    result = run_plan(Context(site, conns), plan)
    took = time.perf_counter() - t0
    assert not result.failed, [o.message for o in result.failed][:3]
    return took


def apply_host_by_host(site: Site, plan: Plan, conns: dict) -> float:
    ctx = Context(site, conns)
    t0 = time.perf_counter()
    for items in plan.by_host().values():
        outcomes = run_host(ctx, items)
        assert not [o for o in outcomes if o.status == "failed"], outcomes[:1]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--per-host", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="virtmix-fleet-") as tmp:
        work = Path(tmp)
        inv = write_fleet(work, args.hosts, args.per_host)
        n = args.hosts * args.per_host
        print(f"fleet: {args.hosts} test:/// hosts, {n} containers with host: auto "
              f"(max_domains {args.per_host} each)")
        conns = open_fleet(load_site(inv))
        try:
            site, plan, t = plan_on(inv, conns)
            per_host = {h: len(items) for h, items in plan.by_host().items()}
            print("  plan (10,000 new entries, on open connections):")
            for k, v in t.items():
                print(f"    {k:<14}: {v:6.3f} s" + ("   (target < 3 s)" if k == "plan total"
                                                     else ""))
            print(f"    placed {len(plan.pending)} entries on {len(per_host)} hosts "
                  f"({min(per_host.values())}..{max(per_host.values())} per host)")
            par = apply_parallel(site, plan, conns)
            print(f"  apply, hosts in parallel : {par:6.3f} s  ({n / par:,.0f} domains/s)")
            _s, again, t2 = plan_on(inv, conns)
            assert not again.pending, [i.name for i in again.pending][:3]
            print(f"  plan again (all {n} exist): {t2['plan total']:6.3f} s, nothing to do, "
                  f"no entry moved (placement step alone {t2['(place alone)']:.3f} s; the "
                  "rest reads and compares 10,000 defined domains)")
        finally:
            close_all(conns)
        conns = open_fleet(site)  # fresh hosts: the test driver forgets at close
        try:
            seq = apply_host_by_host(site, plan, conns)
        finally:
            close_all(conns)
        print(f"  apply, host by host      : {seq:6.3f} s  ({n / seq:,.0f} domains/s)")
        print(f"  ratio host-by-host / parallel: {seq / par:.2f}x")


if __name__ == "__main__":
    main()
