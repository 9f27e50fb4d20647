"""Density on this host: N idle Debian systemd containers from the rootfs cache.

Starts N containers (the shipped `debian` profile: bookworm minbase + systemd, unprivileged,
overlay clones of one cached base) with one `virtmix apply` of one inventory, or with the
plain tools (a loop of `mount -t overlay`, `virsh define`, `virsh start`), and reports:
the start rate over time (per 100 containers, from libvirt's lifecycle events),
PSS per container (libvirt_lxc controller + the container's processes, from
/proc/PID/smaps_rollup), disk per container (overlay upper + work), and the teardown time
(`virtmix destroy INVENTORY --yes --delete-rootfs --force`, or a virsh destroy/undefine +
umount + rm -rf loop).

Run as root on a host prepared by scripts/setup-host.sh, under the shared live lock:
  flock /tmp/virtmix-live.lock python benchmarks/density.py --count 300 [--mode apply|virsh]
Everything it makes is named vmixt-dens-* (domains) and lives under --storage
(default /var/tmp/virtmix-density; the base cache there is kept between runs, the
containers are removed by name at the end, also after a failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtmix.backend.events import EventStream  # noqa: E402
from virtmix.rootfs import RootfsSpec, Storage  # noqa: E402
from virtmix.rootfs.build import ensure_lower  # noqa: E402
from virtmix.util import shared_cgroups  # noqa: E402
from virtmix.util.identity import IDMAP_COUNT, IDMAP_OFFSET  # noqa: E402

URI = "lxc:///system"
PREFIX = "vmixt-dens-"
VIRTMIX = [sys.executable, "-m", "virtmix"]
# The shipped `debian` profile's base (profiles/debian.yaml): what apply builds and clones.
SPEC = RootfsSpec(suite="bookworm", packages=("iproute2", "procps"))
# uid, gid, count: the shared range of a cgroup v1 host (settings.idmap: auto)
SHIFT = (IDMAP_OFFSET, IDMAP_OFFSET, IDMAP_COUNT)


def _quiet(_ctx: object, _err: object) -> None:
    pass


def connect() -> libvirt.virConnect:
    libvirt.registerErrorHandler(_quiet, None)
    return libvirt.open(URI)


def names(count: int) -> list[str]:
    return [f"{PREFIX}{i:04d}" for i in range(count)]


# -- watching the start ----------------------------------------------------------------
class Watcher(threading.Thread):
    """Counts running vmixt-dens-* domains from libvirt's lifecycle events (started +1,
    stopped -1; virtmix.backend.events, its own connection): the start rate seen from
    libvirt, the same for apply and for the virsh loop. Events cost O(1) per start; the
    listing of every active domain 5 times a second it replaces cost libvirtd CPU that grew
    with the count, and competed with the starts it measured. Every vmixt-dens-* domain is
    gone before a run (cleanup), so the count starts at 0. Memory and the start budget are
    checked every 0.2 s."""

    def __init__(self, min_free_mib: int, budget: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.budget = budget  # seconds of starting before apply gets SIGINT (0: none)
        self.samples: list[tuple[float, int]] = []  # (seconds from t0, running), per event
        self.halt = threading.Event()
        self.min_free_kib = min_free_mib * 1024
        self.starter: int | None = None  # pid that gets SIGINT when memory runs short
        self.low_memory: str = ""
        self.running = 0
        self.lost = ""
        # Watching before anything starts: no event of ours is missed.
        self.stream = EventStream(definitions=False)
        self.stream.watch(URI)
        self.t0, self.wall0 = time.monotonic(), time.time()

    def _drain(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            try:
                ev = self.stream.events.get(timeout=left)
            except queue.Empty:
                return
            if isinstance(ev, tuple):  # ("connection-lost", uri)
                self.lost = f"event connection lost ({ev[1]}): counts after it are wrong"
                say(self.lost)
                continue
            if not ev.name.startswith(PREFIX) or ev.event not in ("started", "stopped"):
                continue
            self.running += 1 if ev.event == "started" else -1
            self.samples.append((ev.time - self.wall0, self.running))

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self._drain(time.monotonic() + 0.2)
                n = self.running
                free = mem_available_kib()
                over = self.budget and time.monotonic() - self.t0 > self.budget
                if over and not self.low_memory:
                    self.low_memory = f"start budget of {self.budget:g} s spent at {n} running"
                    say(f"stopping the start: {self.low_memory}")
                    if self.starter is not None:
                        os.kill(self.starter, signal.SIGINT)
                if free < self.min_free_kib and not self.low_memory:
                    # The machine is shared: stop starting before the OOM killer picks a
                    # victim (apply stops between entries on Ctrl-C).
                    self.low_memory = (f"MemAvailable {free // 1024} MiB < "
                                       f"{self.min_free_kib // 1024} MiB at {n} running")
                    say(f"stopping the start: {self.low_memory}")
                    if self.starter is not None:
                        os.kill(self.starter, signal.SIGINT)
            self._drain(time.monotonic() + 0.5)  # the last events in flight
        finally:
            self.stream.close()

    def crossing(self, k: int) -> float | None:
        """Seconds from t0 until k domains were active (None: never)."""
        for t, n in self.samples:
            if n >= k:
                return t
        return None


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))


def rate_table(w: Watcher, count: int, step: int = 100) -> list[tuple[int, float, float]]:
    """(k, seconds at k, starts/s over the last step) for k = step, 2*step, ..."""
    out, prev_t = [], 0.0
    for k in range(step, count + 1, step):
        t = w.crossing(k)
        if t is None:
            break
        out.append((k, t, step / max(t - prev_t, 1e-9)))
        prev_t = t
    return out


# -- the two ways of starting ----------------------------------------------------------
def write_inventory(work: Path, storage: Path, count: int) -> Path:
    containers = {n: {"profile": "debian"} for n in names(count)}
    doc = {"site": PREFIX + "site", "settings": {"storage_dir": str(storage)},
           "hosts": {"local": {"lxc_uri": URI, "containers": containers}}}
    inv = work / "density.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    return inv


def start_apply(inv: Path, jobs: int, watcher: Watcher) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen([*VIRTMIX, "apply", str(inv), "--yes", "--quiet", "-j",
                             str(jobs)], stdout=subprocess.DEVNULL)
    watcher.starter = proc.pid
    rc = proc.wait()
    if rc != 0:  # some entries failed, or it was stopped: what runs is measured all the same
        say(f"virtmix apply exited {rc}" + (f" ({watcher.low_memory})"
                                            if watcher.low_memory else ""))
    return time.monotonic() - t0


def plain_xml(name: str, rootfs: Path) -> str:
    u, g, c = SHIFT
    return f"""<domain type='lxc'><name>{name}</name><memory unit='MiB'>512</memory>
<os><type>exe</type><init>/sbin/init</init></os>
<idmap><uid start='0' target='{u}' count='{c}'/><gid start='0' target='{g}' count='{c}'/></idmap>
<features><privnet/></features>
<devices><filesystem type='mount'><source dir='{rootfs}'/><target dir='/'/></filesystem>
<console type='pty'/></devices></domain>"""


def start_virsh(storage: Path, lower: Path, count: int, watcher: Watcher) -> float:
    """The same by hand: an overlay of the cached base per container, virsh define, start
    (no customisation: every container keeps the base's hostname and machine-id)."""
    plain = storage / "plain"
    plain.mkdir(exist_ok=True)
    t0 = time.monotonic()
    for n in names(count):
        if watcher.low_memory:
            break
        d = plain / n
        for sub in ("upper", "work", "rootfs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chown(d / "upper", SHIFT[0], SHIFT[1])
        os.chown(d / "rootfs", SHIFT[0], SHIFT[1])
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},"
                        f"upperdir={d / 'upper'},workdir={d / 'work'}", str(d / "rootfs")],
                       check=True)
        (d / "dom.xml").write_text(plain_xml(n, d / "rootfs"))
        subprocess.run(["virsh", "-q", "-c", URI, "define", str(d / "dom.xml")], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["virsh", "-q", "-c", URI, "start", n], check=True,
                       stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def destroy_apply(inv: Path, count: int, first: int, jobs: int = 8
                  ) -> tuple[float, int, float]:
    """`virtmix destroy` of the first `first` containers by name (0: none), then of the
    inventory (the rest). Returns (seconds for the first, how many, seconds for the rest)."""
    t0 = time.monotonic()
    done = 0
    if first:
        todo = names(count)[:first]
        subprocess.run([*VIRTMIX, "-c", URI, "destroy", *todo, "--yes", "--quiet",
                        "--delete-rootfs", "--force", "-j", str(jobs)], check=True,
                       stdout=subprocess.DEVNULL)
        done = len(todo)
    t1 = time.monotonic()
    subprocess.run([*VIRTMIX, "destroy", str(inv), "--yes", "--quiet", "--delete-rootfs",
                    "--force", "-j", str(jobs)], check=False, stdout=subprocess.DEVNULL)
    return (t1 - t0, done, time.monotonic() - t1) if first else \
        (time.monotonic() - t0, count, 0.0)


def destroy_virsh(storage: Path, count: int, sample: int) -> tuple[float, int]:
    """The plain teardown loop (virsh destroy, virsh undefine, umount, rm -rf) over the
    first `sample` containers (libvirt's destroy takes ~1.8 s a systemd container: a loop
    over all would hold the shared live lock too long); the rest go in cleanup().
    Returns (seconds, how many)."""
    todo = names(count)[:sample]
    t0 = time.monotonic()
    for n in todo:
        subprocess.run(["virsh", "-q", "-c", URI, "destroy", n], stdout=subprocess.DEVNULL,
                       check=False)
        subprocess.run(["virsh", "-q", "-c", URI, "undefine", n], stdout=subprocess.DEVNULL,
                       check=False)
        d = storage / "plain" / n
        subprocess.run(["umount", "-q", str(d / "rootfs")], check=False)
        shutil.rmtree(d, ignore_errors=True)
    return time.monotonic() - t0, len(todo)


# -- what each container costs ---------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
    return kids


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    return 0


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime (+ the times of its reaped children: what systemd's finished units
    used) of one process."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / TICK
    return 0.0


def libvirtd_cpu() -> float:
    pids = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True,
                          text=True).stdout.split()
    return sum(_cpu_seconds(int(p), children=False) for p in pids)


def machine_cpu() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def own_cpu() -> float:
    """CPU seconds of this process and of the commands it ran (virtmix, virsh, mount)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pss_per_container(conn: libvirt.virConnect) -> tuple[list[int], list[int], list[float]]:
    """(PSS KiB with the libvirt_lxc controller, process count, CPU seconds since start)
    per running container."""
    kids = _children_map()
    pss, procs, cpu = [], [], []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        if not dom.name().startswith(PREFIX):
            continue
        tree, stack = [], [dom.ID()]  # an LXC domain's ID is its controller's pid
        while stack:
            p = stack.pop()
            tree.append(p)
            stack.extend(kids.get(p, []))
        pss.append(sum(_pss_kib(p) for p in tree))
        procs.append(len(tree))
        cpu.append(sum(_cpu_seconds(p) for p in tree))
    return pss, procs, cpu


def du_kib(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, n)).st_blocks // 2
    return total


def system_states(conn: libvirt.virConnect, sample: list[str]) -> dict[str, int]:
    """`systemctl is-system-running` in a sample of the containers (nsenter -a: the user
    namespace too), counted by answer."""
    out: dict[str, int] = {}
    for n in sample:
        try:
            ctl = conn.lookupByName(n).ID()
            with open(f"/proc/{ctl}/task/{ctl}/children") as f:
                init = f.read().split()[0]
            r = subprocess.run(["nsenter", "-t", init, "-a", "systemctl",
                                "is-system-running"], capture_output=True, text=True,
                               timeout=30)
            state = r.stdout.strip() or "no answer"
        except (libvirt.libvirtError, OSError, IndexError, subprocess.TimeoutExpired):
            state = "not running"
        out[state] = out.get(state, 0) + 1
    return out


# -- cleanup by name, whatever happened --------------------------------------------------
def cleanup(storage: Path) -> None:
    """Every vmixt-dens-* domain killed and undefined (in parallel), every tree of ours
    unmounted and deleted."""
    conn = connect()
    try:
        doms = [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]

        def one(d: libvirt.virDomain) -> None:
            with contextlib.suppress(libvirt.libvirtError):
                if d.isActive():  # init killed first: libvirt's destroy alone takes ~1.8 s
                    d.sendProcessSignal(1, libvirt.VIR_DOMAIN_PROCESS_SIGNAL_KILL, 0)
                    for _ in range(100):
                        if not d.isActive():
                            break
                        time.sleep(0.02)
            with contextlib.suppress(libvirt.libvirtError):
                if d.isActive():
                    d.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                d.undefine()
            shared_cgroups.sweep(d.name())  # libvirt leaves the groups its systemd made

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, doms))
    finally:
        conn.close()
    for sub in ("containers", "plain"):
        root = storage / sub
        if not root.is_dir():
            continue
        for d in root.iterdir():
            if d.name.startswith(PREFIX):
                subprocess.run(["umount", "-q", str(d / "rootfs")], check=False)
                shutil.rmtree(d, ignore_errors=True)
    trash = storage / "trash"
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)


def limits_text(count: int, pss_mib: float, procs: float) -> str:
    mem_kib = int(next(line.split()[1] for line in open("/proc/meminfo")
                       if line.startswith("MemTotal:")))
    read = {k: Path(f"/proc/sys/{k.replace('.', '/')}").read_text().strip()
            for k in ("kernel.pid_max", "kernel.threads-max", "fs.inotify.max_user_instances",
                      "kernel.keys.maxkeys", "fs.file-max")}
    by_mem = int(mem_kib / 1024 * 0.9 / max(pss_mib, 0.1))
    by_pid = int(int(read["kernel.pid_max"]) / max(procs, 1))
    by_inotify = int(read["fs.inotify.max_user_instances"]) // 6
    lines = [f"  what limits N here (measured {pss_mib:.1f} MiB, {procs:.1f} processes per "
             "container):",
             f"    memory: {mem_kib // 1024} MiB total -> ~{by_mem} containers at 90 %",
             f"    kernel.pid_max {read['kernel.pid_max']} -> ~{by_pid} containers",
             f"    fs.inotify.max_user_instances {read['fs.inotify.max_user_instances']} "
             f"(~6 per systemd) -> ~{by_inotify} containers",
             f"    kernel.keys.maxkeys {read['kernel.keys.maxkeys']} (one key quota for the "
             "shared id range)",
             f"    fs.file-max {read['fs.file-max']}"]
    return "\n".join(lines)


def start_apply_profiled(inv: Path, jobs: int) -> tuple[float, dict[str, list[float]]]:
    """apply in this process with every operation timed (wall seconds per op), to see
    where a container's start goes: prepare (clone + customise), define, start, verify."""
    from typer.main import get_command

    from virtmix.cli import app
    from virtmix.converge import apply as applymod

    times: dict[str, list[float]] = {}
    lock = threading.Lock()

    def timed(op: str, fn):  # type: ignore[no-untyped-def]
        def run(*a):  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            try:
                return fn(*a)
            finally:
                with lock:
                    times.setdefault(op, []).append(time.monotonic() - t0)
        return run

    saved = dict(applymod.OPS)
    saved_verify = applymod._verify_starts
    for op, fn in saved.items():
        applymod.OPS[op] = timed(op.value, fn)
    applymod._verify_starts = timed("verify (settle window)", saved_verify)
    t0 = time.monotonic()
    try:
        with contextlib.suppress(SystemExit):
            get_command(app).main(["apply", str(inv), "--yes", "--quiet", "-j", str(jobs)],
                                  standalone_mode=False)
    finally:
        applymod.OPS.update(saved)
        applymod._verify_starts = saved_verify
    return time.monotonic() - t0, times


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def run_mode(mode: str, args: argparse.Namespace, storage: Path, lower: Path) -> dict:
    """Start N containers one way, measure them, tear them down; cleanup() whatever."""
    inv = write_inventory(storage, storage, args.count)
    watcher = Watcher(args.min_free_mib, args.start_budget)
    rep: dict = {"mode": mode}
    try:
        watcher.start()
        say(f"{mode}: starting {args.count}")
        cpu0, lcpu0, mcpu0, t0 = own_cpu(), libvirtd_cpu(), machine_cpu(), time.monotonic()
        if mode == "apply" and args.profile:
            watcher.starter = os.getpid()  # apply's own Ctrl-C handler runs in here
            rep["start"], rep["ops"] = start_apply_profiled(inv, args.jobs)
        elif mode == "apply":
            rep["start"] = start_apply(inv, args.jobs, watcher)
        else:
            rep["start"] = start_virsh(storage, lower, args.count, watcher)
        rep["cpu_tool"], rep["cpu_libvirtd"] = own_cpu() - cpu0, libvirtd_cpu() - lcpu0
        rep["cpu_machine"] = machine_cpu() - mcpu0
        rep["cpu_wall"] = time.monotonic() - t0
        time.sleep(1.0)
        watcher.halt.set()
        watcher.join()
        say(f"{mode}: started, measuring")
        rep["rates"] = rate_table(watcher, args.count)
        for k, t, r in rep["rates"]:
            say(f"{k:5d} running at {t:6.1f} s ({r:5.1f} starts/s over the last 100)")
        first = min(args.count, 1000)
        rep["first"] = (first, watcher.crossing(first))
        conn = connect()
        try:
            rep["active"] = sum(1 for d in conn.listAllDomains(
                libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) if d.name().startswith(PREFIX))
            # What N idle containers cost while nothing starts: the CPU left for starts.
            lcpu1, mcpu1, t1 = libvirtd_cpu(), machine_cpu(), time.monotonic()
            time.sleep(args.settle)
            idle = time.monotonic() - t1
            rep["idle_machine"] = (machine_cpu() - mcpu1) / idle
            rep["idle_libvirtd"] = (libvirtd_cpu() - lcpu1) / idle
            step = max(1, args.count // max(1, args.states))
            rep["states"] = system_states(conn, names(args.count)[::step][:args.states])
            rep["pss"], rep["procs"], rep["cpu_ct"] = pss_per_container(conn)
            root = storage / ("containers" if mode == "apply" else "plain")
            rep["disk"] = [du_kib(root / n / "upper") + du_kib(root / n / "work")
                           for n in names(args.count)[::step]]
            rep["loadavg"] = os.getloadavg()
            rep["memfree"] = mem_available_kib()
            rep["low_memory"] = watcher.low_memory
            rep["counted"], rep["lost"] = watcher.running, watcher.lost
        finally:
            conn.close()
        say(f"{mode}: tearing down")
        if mode == "apply":
            active = rep["active"]
            first = min(args.destroy_first, active) if args.destroy_first else 0
            rep["destroy"], rep["destroyed"], rep["destroy_rest"] = destroy_apply(
                inv, active, first, args.destroy_jobs)
        else:
            rep["destroy"], rep["destroyed"] = destroy_virsh(storage, args.count,
                                                             args.plain_destroy_sample)
    finally:
        watcher.halt.set()
        cleanup(storage)
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--mode", choices=("apply", "virsh", "both"), default="apply")
    ap.add_argument("--jobs", type=int, default=4, help="apply -j")
    ap.add_argument("--destroy-jobs", type=int, default=8, help="destroy -j")
    ap.add_argument("--profile", action="store_true",
                    help="run apply in this process and time each operation")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="seconds to let the containers go idle before measuring memory")
    ap.add_argument("--states", type=int, default=20,
                    help="containers asked `systemctl is-system-running`")
    ap.add_argument("--plain-destroy-sample", type=int, default=50,
                    help="containers the plain virsh teardown loop is timed on")
    ap.add_argument("--destroy-first", type=int, default=0,
                    help="time `virtmix destroy NAME...` of this many first (e.g. 1000), "
                    "then destroy the rest with the inventory")
    ap.add_argument("--start-budget", type=float, default=0.0,
                    help="seconds of starting, then apply gets SIGINT and what runs is "
                    "measured (bounds the time under the shared lock)")
    ap.add_argument("--min-free-mib", type=int, default=2048,
                    help="stop starting (SIGINT to apply) when MemAvailable drops below")
    ap.add_argument("--storage", type=Path, default=Path("/var/tmp/virtmix-density"))
    args = ap.parse_args()
    storage = args.storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    os.chmod(storage, 0o711)
    def stop(signum: int, _frame: object) -> None:
        say(f"signal {signum}: cleaning up and stopping")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    cleanup(storage)
    lower = ensure_lower(SPEC, Storage(storage), SHIFT).tree  # the cache, built once
    modes = ("apply", "virsh") if args.mode == "both" else (args.mode,)
    for mode in modes:
        rep = run_mode(mode, args, storage, lower)
        report(args, rep)
        sys.stdout.flush()
    return 0


def _median(xs: list[int] | list[float]) -> float:
    s = sorted(xs)
    return float(s[len(s) // 2]) if s else 0.0


def report(args: argparse.Namespace, rep: dict) -> None:
    n = args.count
    how = (f"virtmix apply -j {args.jobs}" if rep["mode"] == "apply"
           else "a mount + virsh define + virsh start loop")
    print(f"density: {n} idle Debian bookworm systemd containers, {how}")
    print(f"  started: {rep['active']}/{n} running, wall {rep['start']:.1f} s = "
          f"{rep['active'] / rep['start']:.1f} starts/s")
    if rep.get("counted") != rep["active"] or rep.get("lost"):
        print(f"  the events counted {rep.get('counted')} running, the listing after "
              f"{rep['active']}{'; ' + rep['lost'] if rep.get('lost') else ''}")
    if rep.get("low_memory"):
        print(f"  stopped early: {rep['low_memory']}")
    for k, t, r in rep["rates"]:
        print(f"    {k:5d} running at {t:6.1f} s   ({r:5.1f} starts/s over the last 100)")
    first, t_first = rep["first"]
    if t_first:
        print(f"  first {first}: {first / t_first:.1f} starts/s sustained (target >= 10)")
    for op, ts in sorted(rep.get("ops", {}).items()):
        print(f"    op {op:24s}: {len(ts):5d} x, mean {sum(ts) / len(ts) * 1000:7.1f} ms, "
              f"total {sum(ts):7.1f} s (wall, summed over {args.jobs} workers)")
    ct = rep["cpu_ct"]
    print(f"  CPU during the start ({rep['cpu_wall']:.1f} s wall, 2 cores = "
          f"{2 * rep['cpu_wall']:.0f} CPU-s): per container {sum(ct) / max(1, len(ct)):.3f} s in "
          f"it and its libvirt_lxc (since its start), {rep['cpu_libvirtd'] / n:.3f} s in "
          f"libvirtd, {rep['cpu_tool'] / n:.3f} s in the starting tool")
    print(f"  the whole machine during the start: {rep['cpu_machine']:.0f} CPU-s busy of "
          f"{2 * rep['cpu_wall']:.0f} = {rep['cpu_machine'] / n:.3f} CPU-s per container "
          f"(everything: containers, libvirt, virtmix, kernel, other users)")
    print(f"  {rep['active']} idle containers, {args.settle:g} s after the start: the machine "
          f"busy {rep['idle_machine']:.2f} of 2 cores, libvirtd {rep['idle_libvirtd']:.3f}")
    print(f"  systemd states (sample of {sum(rep['states'].values())}): {rep['states']}")
    pss = rep["pss"]
    print(f"  PSS per container incl. libvirt_lxc: median {_median(pss) / 1024:.1f} MiB, "
          f"mean {sum(pss) / max(1, len(pss)) / 1024:.1f} MiB, total "
          f"{sum(pss) / 1024 / 1024:.2f} GiB; processes per container: median "
          f"{_median(rep['procs']):.0f}")
    print(f"  disk per container (upper + work): median {_median(rep['disk']) / 1024:.1f} MiB")
    print(f"  after settling: load average {rep['loadavg'][0]:.1f}, MemAvailable "
          f"{rep['memfree'] / 1024 / 1024:.1f} GiB")
    d, k = rep["destroy"], rep["destroyed"]
    what = ("virtmix destroy --force --delete-rootfs" if rep["mode"] == "apply"
            else "virsh destroy + undefine + umount + rm -rf loop")
    print(f"  teardown of {k} ({what}): {d:.1f} s = {k / d:.1f}/s ({d / k * 1000:.0f} ms each)")
    if rep.get("destroy_rest"):
        print(f"    then the other {rep['active'] - k} with the inventory: "
              f"{rep['destroy_rest']:.1f} s")
    print(limits_text(n, _median(pss) / 1024, _median(rep["procs"])))


if __name__ == "__main__":
    sys.exit(main())
