"""Inside running containers: `attach` (run a command there) and `ps` (their processes).

attach enters the container's namespaces with `nsenter -t <init pid> -a`: unlike `virsh
lxc-enter-namespace` it passes the command's exit code on and, in an <idmap> container, runs
the command as the container's root (uid 0), not as nobody. Before exec the child also joins
the container's cgroups, so the command counts against the container's limits (as with
lxc-attach). ps finds a container's processes by its PID namespace (that of its init), which
stays right when a systemd inside moves processes between cgroups.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from virtmix.admin.targets import Session, Target
from virtmix.errors import StateError
from virtmix.hosts import cgroupfs
from virtmix.hosts.local import (  # noqa: F401 - CONTAINER_PATH, enter_command: attach's API
    CONTAINER_PATH,
    enter_command,
    init_pid,
    is_local,
    require_local,
)
from virtmix.nesting.ops import is_ssh_uri


def container_env(keep: bool) -> dict[str, str]:
    """A clean environment (host variables can hold secrets), like lxc-attach --clear-env."""
    if keep:
        return dict(os.environ)
    return {"PATH": CONTAINER_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "linux"),
            "container": "lxc-libvirt"}


def run_inside(name: str, controller_pid: int | None, argv: list[str], *,
               keep_env: bool = False) -> int:
    """Run argv in the container's namespaces and cgroups with this terminal; its exit code.

    A command killed by a signal gives 128 + the signal number, as a shell reports it.
    """
    pid = init_pid(name, controller_pid)
    dirs = cgroupfs.cgroup_dirs(controller_pid or pid)
    proc = subprocess.run(enter_command(pid, argv), env=container_env(keep_env),
                          preexec_fn=lambda: cgroupfs.join_cgroups(dirs), check=False)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def attach(target: Target, argv: list[str], *, keep_env: bool = False) -> int:
    target.need_container("attach")
    target.need_running("attach")
    if target.record.state == "paused":
        raise StateError(f"attach: {target.address} is frozen; a command there would hang",
                         hint=f"virtmix unfreeze {target.address}")
    if not is_local(target.place.uri) and is_ssh_uri(target.place.uri):
        from virtmix.nesting.ops import attach as attach_over_ssh  # e.g. nested in a guest

        return attach_over_ssh(target.place.uri, target.name, argv, target.record.id)
    require_local(target.place.uri, "attach", target.address)
    # The terminal's Ctrl-C belongs to the command inside, not to virtmix.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return run_inside(target.name, target.record.id, argv, keep_env=keep_env)
    finally:
        signal.signal(signal.SIGINT, old)


# -- ps -------------------------------------------------------------------------------------
@dataclass
class Proc:
    container: str  # "-" for host processes
    pid: int
    ppid: int
    uid: int
    ns_pid: int  # the pid inside its container (= pid for host processes)
    cmd: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _pidns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _proc(pid: int, container: str) -> Proc | None:
    try:
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # exited meanwhile
    cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    nspid = status.get("NSpid", str(pid)).split()
    return Proc(container, pid, int(status.get("PPid", "0")),
                int(status.get("Uid", "0").split()[0]), int(nspid[-1]),
                cmd or f"[{status.get('Name', '?').strip()}]")


def container_namespaces(targets: list[Target]) -> dict[int, str]:
    """PID namespace inode -> container address, for running local containers."""
    out = {}
    for t in targets:
        if t.record.kind != "lxc" or not t.record.active or not is_local(t.place.uri):
            continue
        try:
            ino = _pidns(init_pid(t.name, t.record.id))
        except StateError:
            continue
        if ino is not None:
            out[ino] = t.address
    return out


def running_containers(session: Session) -> list[Target]:
    return [Target(p, c, r) for p, c, r in session.records()
            if r.kind == "lxc" and r.active and is_local(p.uri)]


def ps(session: Session, names: list[str], *, all_processes: bool) -> list[Proc]:
    """Processes of the named containers, of all running ones, or (all) every process."""
    if names:
        targets = [session.find(n) for n in names]
        for t in targets:
            t.need_container("ps")
            t.need_running("ps")
            if not is_ssh_uri(t.place.uri):
                require_local(t.place.uri, "ps", t.address)
    else:
        targets = running_containers(session) + [
            Target(p, c, r) for p, c, r in session.records()
            if r.kind == "lxc" and r.active and not is_local(p.uri) and is_ssh_uri(p.uri)]
    remote = _remote_ps(targets)
    spaces = container_namespaces(targets)
    rows = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        ct = spaces.get(_pidns(pid))
        if ct is None and not all_processes:
            continue
        proc = _proc(pid, ct or "-")
        if proc is not None:
            rows.append(proc)
    rows += remote
    return sorted(rows, key=lambda p: (p.container == "-", p.container, p.pid))


def _remote_ps(targets: list[Target]) -> list[Proc]:
    """Processes of containers behind ssh URIs (e.g. nested in guests), listed there."""
    from virtmix.nesting.ops import ps as ps_over_ssh

    by_uri: dict[str, dict[str, tuple[str, int | None]]] = {}
    for t in targets:
        if not is_local(t.place.uri) and is_ssh_uri(t.place.uri):
            by_uri.setdefault(t.place.uri, {})[t.name] = (t.address, t.record.id)
    return [Proc(r.container, r.pid, r.ppid, r.uid, r.ns_pid, r.cmd)
            for uri, names in by_uri.items() for r in ps_over_ssh(uri, names)]
