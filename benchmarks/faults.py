"""The long fault-injection run: many faults in real applies on the real daemon, then a table.

Faults (each on a fresh site of busybox containers on an isolated network, unless said):
  kill -9 of virtmix at named points (VIRTMIX_FAULT_POINT) of a first apply, of an update
    (live + redefine), of autostart, stop, restart and prune applies, and of rootfs builds
    and clones (a built Debian tree; its base cache is kept in STORAGE between runs);
  libvirtd killed and restarted (as scripts/setup-host.sh starts it) while an apply is
    stopped at a point;
  the storage filesystem filling up during a rootfs build (a 64 MiB tmpfs storage dir);
  two applies of one site at once, and an apply racing destroy;
  with --guests: a guest with a pushed Debian tree powered off right after apply and
    mid-push, and its ssh dropped mid-push (the guest boots under TCG: minutes each).
After each: apply (twice at most after a daemon restart) must leave every entry in its
desired state, a no-op plan, no leftovers and no lost sentinel (see tests/support/faults.py).

Run as root on a prepared host, under the live-test lock:
  flock /tmp/virtmix-live.lock python benchmarks/faults.py [--quick] [--no-daemon]
      [--no-build | --only-build] [--guests | --only-guests]
It restarts libvirtd (unless --no-daemon): do not run it while others use the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import libvirt  # noqa: E402
from support.assets import build_busybox_tree  # noqa: E402
from support.faults import (  # noqa: E402
    PFX,
    Site,
    apply_killed_at,
    apply_stopped_at,
    check_converged,
    kill_children,
    lost,
    make_site,
    remove_site,
    restart_libvirtd,
    run,
    virtmix_argv,
    write_sentinels,
)
from support.live import cleanup_domains, cleanup_networks  # noqa: E402

BUILT_STORAGE = Path("/var/tmp/vmixt-fault-built-storage")
BUILT = {"distro": "debian", "suite": "bookworm"}


@dataclass
class Row:
    kind: str
    name: str
    injected: bool
    converged: bool = False
    leftovers: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    note: str = ""


def _apply(site: Site, *extra: str) -> None:
    res = run("apply", str(site.inventory), "--yes", "-q", *extra, env=site.env)
    if res.returncode != 0:
        raise RuntimeError(f"setup apply failed ({res.returncode}): {res.stderr[-500:]}")


# -- scenarios: bring the site to its starting state and change the inventory -------------
def s_create(site: Site) -> tuple:
    return ()


def s_update(site: Site) -> tuple:
    _apply(site)
    for n in site.names:
        site.container(n)["cpu"]["shares"] = 1024
    site.write()
    return ()


def s_autostart(site: Site) -> tuple:
    _apply(site)
    for n in site.names:
        site.container(n)["autostart"] = True
    site.write()
    return ()


def s_stop(site: Site) -> tuple:
    _apply(site)
    for n in site.names:
        site.container(n)["state"] = "stopped"
    site.write()
    return ()


def s_restart(site: Site) -> tuple:
    _apply(site)
    for n in site.names:
        site.container(n)["memory"] = "96MiB"
    site.write()
    return ("--restart",)


def s_prune(site: Site) -> tuple:
    _apply(site)
    del site.spec["hosts"]["h1"]["containers"][site.names[-1]]
    site.write()
    return ("--prune",)


KILL_POINTS = [
    (s_create, p) for p in (
        "op-network-define-before", "op-network-define-after", "op-network-start-before",
        "op-network-start-after", "op-prepare-before", "op-prepare-after",
        "op-define-before", "op-define-after", "op-define-after@3", "op-start-before",
        "op-start-after", "op-start-after@3", "verify-begin")
] + [(s_update, p) for p in ("op-redefine-before", "op-redefine-after", "op-live-before",
                              "op-live-after@2")] + [
    (s_autostart, "op-autostart-before"), (s_autostart, "op-autostart-after"),
    (s_stop, "op-stop-before"), (s_stop, "op-stop-after"),
    (s_restart, "op-restart-before"), (s_restart, "op-restart-after"),
    (s_prune, "op-remove-before"), (s_prune, "op-remove-after"),
]
BUILT_POINTS = ["rootfs-clone-begin", "rootfs-clone-made", "rootfs-clone-before-state",
                "write-atomic-before-rename", "write-atomic-before-rename@2",
                "op-prepare-after"]
BUILD_POINTS = ["rootfs-build-begin", "rootfs-build-before-marker"]


def kill_fault(conn, bb: Path, setup, point: str) -> Row:
    site = make_site(bb)
    try:
        extra = setup(site)
        sentinels = write_sentinels(site, conn)
        inj = apply_killed_at(site, point, *extra)
        row = Row("kill -9 of virtmix", f"{setup.__name__[2:]}:{point}", inj.reached)
        if not inj.reached:
            row.note = f"not reached (exit {inj.returncode})"
            return row
        chk = check_converged(site, conn, extra=extra)
        row.converged, row.leftovers, row.lost = chk.converged, chk.leftovers, lost(
            site, sentinels)
        row.note = "; ".join(chk.problems)[:200]
        return row
    finally:
        remove_site(site)


def built_fault(conn, point: str, *, fresh_build: bool = False) -> Row:
    BUILT_STORAGE.mkdir(exist_ok=True)
    BUILT_STORAGE.chmod(0o755)
    spec = dict(BUILT)
    if fresh_build:  # a spec no cache entry has: its build is what gets killed
        spec["packages"] = ["less"]
        subprocess.run(["rm", "-rf", *map(str, (BUILT_STORAGE / "cache").glob("*"))],
                       check=False)
    site = make_site(None, n=1, network=False, storage=BUILT_STORAGE, built=spec)
    try:
        inj = apply_killed_at(site, point, timeout=900)
        row = Row("kill -9 of virtmix (built tree)", point, inj.reached)
        if not inj.reached:
            row.note = f"not reached (exit {inj.returncode}): {inj.output[-200:]}"
            return row
        chk = check_converged(site, conn)
        row.converged, row.leftovers = chk.converged, chk.leftovers
        row.note = "; ".join(chk.problems)[:200]
        return row
    finally:
        remove_site(site)


def daemon_fault(conn_factory, bb: Path, point: str) -> Row:
    site = make_site(bb)
    try:
        inj = apply_stopped_at(site, point, lambda _pid: restart_libvirtd())
        row = Row("libvirtd killed + restarted", point, inj.reached,
                  note=f"apply during the fault exited {inj.returncode}")
        conn = conn_factory()
        chk = check_converged(site, conn, max_applies=2)
        row.converged, row.leftovers = chk.converged, chk.leftovers
        if chk.problems:
            row.note += "; " + "; ".join(chk.problems)[:200]
        row.note += f"; converged after {chk.applies} apply(s)"
        conn.close()
        return row
    finally:
        remove_site(site)


def enospc_fault(conn) -> Row:
    mnt = Path(tempfile.mkdtemp(prefix=PFX + "tmpfs-", dir="/var/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    site = make_site(None, n=1, network=False, storage=mnt, built=dict(BUILT))
    row = Row("storage full during rootfs build", "64 MiB tmpfs", False)
    try:
        res = run("apply", str(site.inventory), "--yes", "-q", env=site.env, timeout=900)
        row.injected = res.returncode != 0
        left = [str(p) for p in (mnt / "cache").glob(".build-*")] if (mnt / "cache").is_dir() \
            else []
        subprocess.run(["mount", "-o", "remount,size=2g", str(mnt)], check=True)
        chk = check_converged(site, conn)
        row.converged, row.leftovers = chk.converged, chk.leftovers + left
        row.note = f"apply on the full fs exited {res.returncode}; " + "; ".join(chk.problems)
        return row
    finally:
        remove_site(site)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        os.rmdir(mnt)


def concurrent_fault(conn, bb: Path) -> Row:
    site = make_site(bb)
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            run("apply", str(site.inventory), "--yes", "-q", env=site.env)))
            for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row = Row("two applies at once", "same site", True,
                  note="exits " + ",".join(str(r.returncode) for r in results))
        chk = check_converged(site, conn)
        row.converged = chk.converged and all(r.returncode == 0 for r in results)
        row.leftovers = chk.leftovers
        return row
    finally:
        remove_site(site)


def race_destroy_fault(conn, bb: Path, delay: float) -> Row:
    site = make_site(bb)
    try:
        _apply(site)
        sentinels = write_sentinels(site, conn)
        for n in site.names:
            site.container(n)["cpu"]["shares"] = 768
        site.write()
        env = {**os.environ, **site.env}
        env.pop("LIBVIRT_DEFAULT_URI", None)
        proc = subprocess.Popen(virtmix_argv("apply", str(site.inventory), "--yes", "-q"),
                                env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        d = run("destroy", str(site.inventory), "--yes", "-q", env=site.env)
        proc.wait(timeout=300)
        row = Row("apply racing destroy", f"destroy {delay:g}s after apply", True,
                  note=f"apply exit {proc.returncode}, destroy exit {d.returncode}")
        chk = check_converged(site, conn)
        row.converged, row.leftovers = chk.converged, chk.leftovers
        row.lost = lost(site, sentinels)
        return row
    finally:
        remove_site(site)


# -- guests: a Debian tree pushed into a guest (slow: the guest boots under TCG) ----------
NEST_STORAGE = Path("/var/tmp/vmixt-nest-storage")  # the nesting tests': its image cache
NEST_SITE = """\
name: {name}
settings: {{storage_dir: {storage}}}
networks:
  {name}-net: {{host: hv, mode: isolated, bridge: vmixtflt1, ipv4: 10.231.78.1/24}}
hosts:
  hv:
    virt_type: qemu
    guests:
      {name}-g:
        vcpus: 2
        memory: 768MiB
        interfaces: [{{network: {name}-net, ipv4: 10.231.78.10/24}}]
        containers:
          {name}-deb: {{rootfs: {{distro: debian, suite: bookworm}}, cpu: {{shares: 256}}}}
"""


def _nest_site() -> tuple[Site, str, str]:
    name = PFX + "nest"
    root = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    inv = root / "site.yaml"
    inv.write_text(NEST_SITE.format(name=name, storage=NEST_STORAGE))
    (root / "locks").mkdir()
    site = Site(NEST_STORAGE, root / "trees", [], inv, root / "locks")
    return site, f"{name}-g", f"{name}-deb"


def _nested_converged(site: Site, guest: str, ct: str, max_applies: int = 2) -> Row:
    row = Row("guest", "", True)
    env = {**site.env, "VIRTMIX_GUEST_WAIT": "300"}
    for n in range(max_applies):
        res = run("apply", str(site.inventory), "--yes", "-q", env=env, timeout=900)
        if res.returncode == 0:
            break
        row.note += f"apply {n + 1} exited {res.returncode}: {res.stderr.strip()[-300:]}; "
    else:
        return row
    plan = run("plan", str(site.inventory), "--no-diff", env=env, timeout=300)
    ls = run("-i", str(site.inventory), "ls", "-o", "json", env=env, timeout=300)
    states = {r["name"]: r["state"] for r in json.loads(ls.stdout or "[]")}
    row.converged = plan.returncode == 0 and states.get(ct) == "running" \
        and states.get(guest) == "running"
    if not row.converged:
        row.note += f"plan exit {plan.returncode}, states {states}"
    return row


def guest_faults(qemu) -> list[Row]:
    rows = []
    site, guest, ct = _nest_site()
    env = {**site.env, "VIRTMIX_GUEST_WAIT": "300"}

    def power_off(_pid: int = 0) -> None:
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", guest],
                       capture_output=True, check=False)

    try:
        first = run("apply", str(site.inventory), "--yes", "-q", env=env, timeout=1200)
        if first.returncode != 0:
            return [Row("guest", "setup apply", False, note=first.stderr[-400:])]
        power_off()  # right after apply, as a power cut would
        row = _nested_converged(site, guest, ct)
        row.name = "powered off right after apply"
        rows.append(row)
        print(f"guest {row}", flush=True)
        # mid-push: the tree must be pushed again, so it is deleted first
        run("-i", str(site.inventory), "destroy", f"{guest}/{ct}", "--yes", "--force",
            env=env, timeout=300)
        for name, action in (("powered off mid-push", power_off),
                             ("ssh dropped mid-push",
                              lambda pid: kill_children(pid, "ssh"))):
            inj = apply_stopped_at(site, "push-streaming", action, timeout=1200)
            row = _nested_converged(site, guest, ct)
            row.name, row.injected = name, inj.reached
            row.note = f"faulted apply exited {inj.returncode}; " + row.note
            rows.append(row)
            print(f"guest {row}", flush=True)
            run("-i", str(site.inventory), "destroy", f"{guest}/{ct}", "--yes", "--force",
                env=env, timeout=300)
    finally:
        run("destroy", str(site.inventory), "--yes", "--force", "-q", env=site.env,
            timeout=600)
        subprocess.run(["rm", "-rf", str(site.inventory.parent)], check=False)
    return rows


def print_table(rows: list[Row]) -> None:
    kinds: dict[str, list[Row]] = {}
    for r in rows:
        kinds.setdefault(r.kind, []).append(r)
    print("\n| fault | injected | converged | leftovers | data lost |")
    print("|---|---|---|---|---|")
    total = [0, 0, 0, 0]
    for kind, rs in kinds.items():
        inj = [r for r in rs if r.injected]
        vals = [len(inj), sum(r.converged for r in inj), sum(len(r.leftovers) for r in inj),
                sum(len(r.lost) for r in inj)]
        total = [a + b for a, b in zip(total, vals, strict=True)]
        print(f"| {kind} | {vals[0]} | {vals[1]} | {vals[2]} | {vals[3]} |")
    print(f"| **all** | {total[0]} | {total[1]} | {total[2]} | {total[3]} |")
    print(f"\ndistinct injection points: {len({r.name for r in rows if r.injected})}")
    for r in rows:
        if not r.injected or not r.converged or r.leftovers or r.lost or r.note:
            print(f"- {r.kind} {r.name}: injected={r.injected} converged={r.converged} "
                  f"leftovers={r.leftovers} lost={r.lost} {r.note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few kill points only")
    ap.add_argument("--no-daemon", action="store_true", help="skip libvirtd restarts")
    ap.add_argument("--no-build", action="store_true", help="skip built-tree faults")
    ap.add_argument("--only-build", action="store_true", help="only the built-tree and "
                    "full-storage faults (a second, shorter locked run)")
    ap.add_argument("--guests", action="store_true", help="also the guest faults (power "
                    "off right after apply and mid-push, ssh dropped mid-push; minutes each)")
    ap.add_argument("--only-guests", action="store_true", help="only the guest faults")
    ap.add_argument("--points", default="", help="only these kill points (comma-separated "
                    "SCENARIO:POINT as the table names them)")
    args = ap.parse_args()
    libvirt.registerErrorHandler(lambda _c, _e: None, None)

    def connect():
        return libvirt.open("lxc:///system")

    conn = connect()
    cleanup_domains(conn, PFX)
    cleanup_networks(conn, PFX)
    base = Path(tempfile.mkdtemp(prefix=PFX + "bb-", dir="/var/tmp"))
    base.chmod(0o755)
    bb = build_busybox_tree(base / "root")
    rows: list[Row] = []
    t0 = time.monotonic()
    try:
        if args.only_guests:
            args.only_build = args.no_build = args.no_daemon = args.guests = True
        points = [] if args.only_build else KILL_POINTS[::4] if args.quick else KILL_POINTS
        if args.points:
            wanted = set(args.points.split(","))
            points = [(f, p) for f, p in points if f"{f.__name__[2:]}:{p}" in wanted]
            args.only_build = args.no_build = args.no_daemon = True
        for setup, point in points:
            rows.append(kill_fault(conn, bb, setup, point))
            print(f"{time.monotonic() - t0:6.0f}s {rows[-1]}", flush=True)
        if not args.only_build:
            rows.append(concurrent_fault(conn, bb))
            for delay in (0.2, 0.8, 1.5):
                rows.append(race_destroy_fault(conn, bb, delay))
            print(f"{time.monotonic() - t0:6.0f}s concurrency done", flush=True)
        if not args.no_daemon and not args.only_build:
            for point in ("op-define-after@2", "op-start-before@2", "verify-begin"):
                rows.append(daemon_fault(connect, bb, point))
                conn = connect()
                print(f"{time.monotonic() - t0:6.0f}s {rows[-1]}", flush=True)
        if args.guests:
            rows += guest_faults(conn)
        if not args.no_build and not args.only_guests:
            for point in BUILT_POINTS:
                rows.append(built_fault(conn, point))
                print(f"{time.monotonic() - t0:6.0f}s {rows[-1]}", flush=True)
            for point in BUILD_POINTS:
                rows.append(built_fault(conn, point, fresh_build=True))
                print(f"{time.monotonic() - t0:6.0f}s {rows[-1]}", flush=True)
            rows.append(enospc_fault(conn))
            print(f"{time.monotonic() - t0:6.0f}s {rows[-1]}", flush=True)
    finally:
        cleanup_domains(conn, PFX)
        cleanup_networks(conn, PFX)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    print_table(rows)
    print(f"\ntotal {time.monotonic() - t0:.0f}s")
    bad = [r for r in rows if r.injected and (not r.converged or r.leftovers or r.lost)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
