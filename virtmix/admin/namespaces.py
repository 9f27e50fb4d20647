"""Inside running containers: `attach` (run a command there) and `ps` (their processes).

attach enters the container's namespaces with `nsenter -t <init pid> -a`: unlike `virsh
lxc-enter-namespace` it passes the command's exit code on and, in an <idmap> container, runs
the command as the container's root (uid 0), not as nobody. Before exec the child also joins
the container's cgroups, so the command counts against the container's limits (as with
lxc-attach). The command gets its own pseudo-terminal (or pipes), never a file descriptor
or the controlling terminal of the admin's terminal, and gets Ctrl-C (admin/relay.py). A
command that does not exist there is reported in virtmix's words with exit 127 (126 when it
cannot be executed), as a shell does. ps finds a container's processes by its PID namespace
(that of its init), which stays right when a systemd inside moves processes between cgroups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtmix.admin.relay import run_relayed
from virtmix.admin.targets import Session, Target
from virtmix.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    StateError,
)
from virtmix.hosts import cgroupfs, is_local, is_ssh_uri, require_local
from virtmix.hosts.local import (  # noqa: F401 - CONTAINER_PATH, enter_command: attach's API
    CONTAINER_PATH,
    enter_command,
    init_pid,
)


def container_env(keep: bool) -> dict[str, str]:
    """A clean environment (host variables can hold secrets), like lxc-attach --clear-env."""
    if keep:
        return dict(os.environ)
    return {"PATH": CONTAINER_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "linux"),
            "container": "lxc-libvirt"}


def _lookup_in_root(root: str, word: str, path: str) -> int:
    """0 when `word` is executable below root (PATH search for a bare name), 127 when it is
    not there, 126 when it is there but not executable. Checked in a child chrooted into the
    container's root, so the container's absolute symlinks resolve as they will there."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 127
        try:
            os.chroot(root)
            os.chdir("/")
            cands = [word] if "/" in word else [f"{d or '.'}/{word}" for d in path.split(":")]
            for cand in cands:
                if os.path.isfile(cand):
                    if os.access(cand, os.X_OK):
                        code = 0
                        break
                    code = 126
                elif os.path.isdir(cand) and "/" in word:
                    code = 126
        except BaseException:
            code = 0  # cannot tell: let the command run and speak for itself
        os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def check_command(pid: int, name: str, argv: list[str], env: dict[str, str]) -> None:
    """Refuse, in virtmix's words, a command the container does not have."""
    word = (argv or ["/bin/sh"])[0]
    code = _lookup_in_root(f"/proc/{pid}/root", word, env.get("PATH", CONTAINER_PATH))
    if code == 127:
        raise CommandNotFoundError(f"{word}: command not found in {name}")
    if code == 126:
        raise CommandNotExecutableError(f"{word}: not executable in {name} (permission "
                                        "denied or a directory)")


def live_init_pid(name: str, controller_pid: int | None) -> int:
    """The container's init pid, checked to be a live process (never 0: nsenter would say
    "no target PID specified" in its own words)."""
    pid = init_pid(name, controller_pid)
    if pid <= 0 or not os.path.exists(f"/proc/{pid}/ns/mnt"):
        raise StateError(f"container {name}: its init process is not known yet or is gone "
                         f"(libvirt reported pid {pid})",
                         hint=f"wait a moment, or check it with virtmix info {name}")
    return pid


def run_inside(name: str, controller_pid: int | None, argv: list[str], *,
               keep_env: bool = False) -> int:
    """Run argv in the container's namespaces and cgroups; its exit code.

    The command gets a pseudo-terminal of its own (or pipes), never the admin's terminal;
    a signal ends it with 128 + the signal number, as a shell reports it.
    """
    pid = live_init_pid(name, controller_pid)
    env = container_env(keep_env)
    check_command(pid, name, argv, env)
    dirs = cgroupfs.cgroup_dirs(controller_pid or pid)
    return run_relayed(enter_command(pid, argv), env,
                       lambda: cgroupfs.join_cgroups(dirs))


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
    # Ctrl-C and kill -INT reach the command through the relay; virtmix then exits 130.
    return run_inside(target.name, target.record.id, argv, keep_env=keep_env)


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
