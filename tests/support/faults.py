"""Fault injection into real applies (tests/faults and benchmarks/faults.py share this).

A fault is injected into a `virtmix apply` process on the real daemon: SIGKILL at a named
point (VIRTMIX_FAULT_POINT, virtmix.util.faults), or a SIGSTOP there while the harness
breaks something (libvirtd, a concurrent destroy), then SIGCONT. After each fault the
harness applies again (once; twice where the daemon was restarting) and checks that the
site converged: every entry defined once and in its desired state, a no-op plan, no
leftovers (temporary dirs, `.part`/`.tmp` files, held locks, orphan mounts) and no data
lost (a sentinel written into each container's own tree before the fault is still there).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PFX = "vmixt-fault-"
NET = PFX + "net"
BRIDGE = "vmixtflt0"
LXC = "lxc:///system"


def virtmix_argv(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "virtmix"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "virtmix"]
    return base + list(args)


def run(*args: str, env: dict | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("LIBVIRT_DEFAULT_URI", None)
    full.update(env or {})
    return subprocess.run(virtmix_argv(*args), capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=REPO)


@dataclass
class Site:
    """A fault-test site: busybox containers, each on its own tree copy, on one network."""

    storage: Path
    trees: Path
    names: list[str]
    inventory: Path
    lock_dir: Path
    spec: dict = field(default_factory=dict)

    def write(self) -> None:
        self.inventory.write_text(yaml.safe_dump(self.spec, sort_keys=False))

    def container(self, name: str) -> dict:
        return self.spec["hosts"]["h1"]["containers"][name]

    @property
    def env(self) -> dict:
        return {"VIRTMIX_LOCK_DIR": str(self.lock_dir)}


def make_site(busybox_tree: Path | None, n: int = 3, *, network: bool = True,
              storage: Path | None = None, built: dict | None = None) -> Site:
    """n busybox containers on their own tree copies; with built={rootfs spec}, n built
    containers instead, in `storage` (kept by remove_site: its base-tree cache is reused)."""
    root = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    root.chmod(0o755)
    trees, locks = root / "trees", root / "locks"
    storage = storage or root / "storage"
    for d in (storage, trees, locks):
        d.mkdir(exist_ok=True)
        # The lock directory must be root's alone (util/locking.py refuses any other).
        d.chmod(0o700 if d == locks else 0o755)
    names = [f"{PFX}c{i}" for i in range(n)]
    containers = {}
    for name in names:
        spec: dict = {"memory": "64MiB", "cpu": {"shares": 512}}
        if built is not None:
            spec["rootfs"] = dict(built)
        else:
            tree = trees / name
            subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
            spec["rootfs"] = {"path": str(tree)}
        if network:
            spec["interfaces"] = [{"network": NET}]
        containers[name] = spec
    doc = {"name": PFX + "site", "settings": {"storage_dir": str(storage)},
           "networks": {NET: {"host": "h1", "mode": "isolated", "bridge": BRIDGE,
                              "ipv4": "10.231.79.1/24"}} if network else {},
           "hosts": {"h1": {"uri": "qemu:///system", "lxc_uri": LXC, "virt_type": "qemu",
                            "containers": containers}}}
    site = Site(storage, trees, names, root / "site.yaml", locks, doc)
    site.write()
    return site


def remove_site(site: Site) -> None:
    run("destroy", str(site.inventory), "--yes", "--force", "--delete-rootfs", "-q",
        env=site.env, timeout=120)
    shutil.rmtree(site.inventory.parent, ignore_errors=True)


def write_sentinels(site: Site, conn) -> dict[str, str]:
    """A file in each existing container's tree: it must survive the fault."""
    out = {}
    names = {d.name() for d in conn.listAllDomains(0)}
    for name in site.names:
        tree = site.trees / name
        if name in names and tree.is_dir():
            value = f"{name}-{time.monotonic_ns()}"
            (tree / "root").mkdir(exist_ok=True)
            (tree / "root" / "sentinel").write_text(value)
            out[name] = value
    return out


def lost(site: Site, sentinels: dict[str, str]) -> list[str]:
    return [n for n, v in sentinels.items()
            if not (site.trees / n / "root" / "sentinel").is_file()
            or (site.trees / n / "root" / "sentinel").read_text() != v]


# -- injecting ---------------------------------------------------------------------------
@dataclass
class Injection:
    point: str
    returncode: int | None
    reached: bool
    output: str = ""


def apply_killed_at(site: Site, point: str, *extra: str, timeout: float = 240) -> Injection:
    """`apply --yes` that SIGKILLs itself at point; reached is False when it ended by itself."""
    res = run("apply", str(site.inventory), "--yes", "-q", *extra,
              env={**site.env, "VIRTMIX_FAULT_POINT": point}, timeout=timeout)
    return Injection(point, res.returncode, res.returncode == -signal.SIGKILL,
                     res.stdout + res.stderr)


def apply_stopped_at(site: Site, point: str, action, *extra: str,
                     timeout: float = 240) -> Injection:
    """`apply` that stops itself at point; action(pid) runs then; the apply continues."""
    full = dict(os.environ)
    full.pop("LIBVIRT_DEFAULT_URI", None)
    full.update({**site.env, "VIRTMIX_FAULT_POINT": point, "VIRTMIX_FAULT_ACTION": "stop"})
    proc = subprocess.Popen(virtmix_argv("apply", str(site.inventory), "--yes", "-q", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full, cwd=REPO)
    reached = False
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state == "T":
            reached = True
            action(proc.pid)
            os.kill(proc.pid, signal.SIGCONT)
            break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=timeout)
    return Injection(point, proc.returncode, reached, out)


# -- checking ----------------------------------------------------------------------------
@dataclass
class Check:
    applies: int = 0
    converged: bool = False
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def leftovers(site: Site) -> list[str]:
    """Temporary files and dirs, held locks and mounts nobody owns, under the site's dirs."""
    found = []
    for root in (site.storage, site.trees):
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                if n.endswith((".part", ".tmp")) or n.startswith(".build-") or \
                        ".virtmix-tmp" in n:
                    found.append(os.path.join(dirpath, n))
            if "rootfs" in dirnames and os.path.basename(dirpath).startswith(PFX):
                dirnames.remove("rootfs")  # a container's own tree: not walked
    for lock in site.lock_dir.glob("*.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found.append(f"{lock} (held)")
        finally:
            os.close(fd)
    for line in Path("/proc/mounts").read_text().splitlines():
        mnt = line.split()[1]
        if mnt.startswith(str(site.storage) + "/"):  # the storage dir itself may be one
            name = Path(mnt).parent.name
            if not Path(mnt).parent.joinpath("state.json").is_file():
                found.append(f"{mnt} (mounted, no container owns it)")
            elif name not in site.names:
                found.append(f"{mnt} (mounted for {name}, not in the inventory)")
    return found


def check_converged(site: Site, conn, *, max_applies: int = 1,
                    expect_running: dict[str, bool] | None = None,
                    extra: tuple[str, ...] = ()) -> Check:
    """The next apply (with the faulted apply's own options, e.g. --prune) converges."""
    chk = Check()
    for _ in range(max_applies):
        chk.applies += 1
        res = run("apply", str(site.inventory), "--yes", "-q", *extra, env=site.env)
        if res.returncode == 0:
            break
        chk.problems.append(f"apply exited {res.returncode}: {res.stderr.strip()[-600:]}")
        time.sleep(2)
    else:
        return chk
    chk.problems.clear()
    plan = run("plan", str(site.inventory), "--no-diff",
               *[a for a in extra if a in ("--prune", "--restart")], env=site.env)
    if plan.returncode != 0:
        chk.problems.append(f"plan after apply exited {plan.returncode}: {plan.stdout[-600:]}")
    doms = [d.name() for d in conn.listAllDomains(0) if d.name().startswith(PFX)]
    listed = run("-c", LXC, "ls", "-o", "json", env=site.env)
    shown = {r["name"]: r["state"] for r in json.loads(listed.stdout or "[]")}
    for name in site.names:
        if name not in site.spec["hosts"]["h1"]["containers"]:
            if name in doms:
                chk.problems.append(f"{name}: still defined after it left the inventory")
            continue
        if doms.count(name) != 1:
            chk.problems.append(f"{name}: defined {doms.count(name)} times")
            continue
        want = (expect_running or {}).get(
            name, site.container(name).get("state", "running") == "running")
        if bool(conn.lookupByName(name).isActive()) != want:
            chk.problems.append(f"{name}: active={not want}, inventory wants {want}")
        elif (shown.get(name) == "running") != want:  # ls must tell the same
            chk.problems.append(f"{name}: ls says {shown.get(name)}, inventory wants "
                                f"{'running' if want else 'stopped'}")
    chk.leftovers = leftovers(site)
    chk.converged = not chk.problems
    return chk


# -- libvirtd ----------------------------------------------------------------------------
def libvirtd_pids() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == "libvirtd" and stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(p.name))
    return pids


def daemon_answers() -> bool:
    res = subprocess.run(["virsh", "-c", LXC, "version"], capture_output=True, timeout=20)
    return res.returncode == 0


def restart_libvirtd(kill: bool = True) -> None:
    """kill -9 libvirtd, then start it as scripts/setup-host.sh does (no service manager
    here): remove the dead daemon's sockets, `libvirtd -d`, wait until it answers."""
    if kill:
        for pid in libvirtd_pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while libvirtd_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
    for sock in ("/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock-ro"):
        with_suppress(lambda s=sock: os.unlink(s))
    subprocess.run(["libvirtd", "-d"], check=True)
    deadline = time.monotonic() + 20
    while not daemon_answers():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer within 20 s of its restart")
        time.sleep(0.2)


def kill_children(pid: int, comm: str) -> list[int]:
    """SIGKILL the children of pid named comm (e.g. the ssh of a push): only processes
    this harness started, found by their parent."""
    killed = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and name == comm:
            os.kill(int(p.name), signal.SIGKILL)
            killed.append(int(p.name))
    return killed


def with_suppress(fn) -> None:
    try:
        fn()
    except OSError:
        pass
