"""A host behind a libvirt ssh URI (a guest virtmix built): commands, cgroups, init, trees.

libvirt has no API to run a command in a container, to find its init, or to set a running
container's cpuset; their namespaces and cgroups are on the far host, so these go over ssh,
with the same ssh setup libvirt's transport uses (virtmix's wrapper, key and pinned host
keys: `backend.resolve_uri` gives the URI libvirt really opens). Every ssh virtmix runs goes
through `run_argv` (images.keys.run_ssh too), so timeouts and failures read the same.
Guests virtmix builds are pure cgroup v2 (their cgroup files are at /sys/fs/cgroup).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from virtmix.backend import resolve_uri, transport_registered
from virtmix.errors import BackendError, StateError, UsageError
from virtmix.hosts import NESTED_CGROUPS
from virtmix.util.polling import poll
from virtmix.util.units import format_cpuset, normalize_cpuset
from virtmix.util.uris import is_ssh_uri

# libvirt 9.0 keeps a running container's status (with <init pid='N'/>) here.
LXC_STATE_DIR = "/run/libvirt/lxc"
CGROUP_ROOT = "/sys/fs/cgroup"  # the unified hierarchy of a guest virtmix built
NOT_RUNNING = 125  # exit code of the init-pid script when the container has no init there
INIT_WAIT = 5.0  # seconds to keep asking while libvirt does not know the init yet


def run_argv(argv: list[str], label: str, *, timeout: float = 60,
             input: str | bytes | None = None, check: bool = True
             ) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """Run an ssh command line; BackendError naming `label` on a timeout or (check) a failure."""
    text = not isinstance(input, bytes)
    try:
        res = subprocess.run(argv, input=input, capture_output=True, text=text,
                             timeout=timeout, check=False,
                             stdin=subprocess.DEVNULL if input is None else None)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{label}: {argv[-1]!r} took over {timeout:g}s") from None
    if check and res.returncode != 0:
        err = res.stderr if isinstance(res.stderr, str) else res.stderr.decode(errors="replace")
        raise BackendError(f"{label}: {argv[-1]!r} exited {res.returncode}: "
                           f"{err.strip()[-500:]}")
    return res


def ssh_argv(uri: str, *, tty: bool = False) -> list[str]:
    """The ssh command line that reaches the machine behind `uri` as libvirt does."""
    real = urlsplit(resolve_uri(uri))
    if not is_ssh_uri(uri) or not real.hostname:
        raise UsageError(f"{uri}: not an ssh URI; this verb runs where the container is")
    query = dict(parse_qsl(real.query))
    host = f"{real.username}@{real.hostname}" if real.username else real.hostname
    if host.startswith("-"):
        # ssh would take it as an option (-oProxyCommand=... runs a command as root).
        raise UsageError(f"{uri}: host {host!r} starts with '-'; refusing to pass it to ssh")
    argv = [query.get("command", "ssh"), "-t" if tty else "-T"]
    if real.port:
        argv += ["-p", str(real.port)]
    if "keyfile" in query:
        argv += ["-i", query["keyfile"]]
    if not transport_registered(uri):
        argv += ["-o", "BatchMode=yes"]
    return [*argv, "--", host]  # `--`: nothing after it is an option of ssh's


def run_remote(uri: str, script: str, *, timeout: float = 60) -> str:
    """Run a shell script on the host behind uri; its stdout, or BackendError with stderr."""
    res = run_argv([*ssh_argv(uri), script], uri, timeout=timeout)
    return str(res.stdout)


def init_pid_sh(name: str, controller_pid: int | None = None,
                state_dir: str = LXC_STATE_DIR) -> str:
    """Shell that sets $pid to the container's init pid, or exits NOT_RUNNING.

    libvirt's status file names it once the controller reported it; until then it says 0
    ("Init process ID is not yet known"), or (one CI run saw it) never names it: the init is
    then the only child of the libvirt_lxc controller, whose pid is the domain's ID. 0 is
    never taken for a pid. The local host uses the same two sources (hosts.local.init_pid).
    """
    status = shlex.quote(f"{state_dir}/{name}.xml")
    fallback = ""
    if controller_pid:
        kids = f"/proc/{int(controller_pid)}/task/{int(controller_pid)}/children"
        fallback = (f"[ -n \"$pid\" ] && [ \"$pid\" != 0 ] || "
                    f"pid=$(cut -d' ' -f1 {kids} 2>/dev/null); ")
    return (f"pid=$(sed -n \"s/.*<init pid='\\([0-9]*\\)'.*/\\1/p\" {status} 2>/dev/null); "
            + fallback +
            f"[ -n \"$pid\" ] && [ \"$pid\" != 0 ] || "
            f"{{ echo 'container {name} is not running there' >&2; exit {NOT_RUNNING}; }}; ")


def cgroup_dir_sh(pid: int | str, *, quiet: bool = False) -> str:
    """Shell that sets $d to pid's cgroup v2 directory (guests virtmix builds are pure v2),
    then `&&`: when the process is gone nothing after it runs (never on the root cgroup).
    pid is a number or a shell variable ("$id")."""
    if isinstance(pid, str) and not re.fullmatch(r"\$[a-z_]+", pid):
        raise ValueError(f"not a pid or a shell variable: {pid!r}")
    ref = pid if isinstance(pid, str) else str(int(pid))
    err = " 2>/dev/null" if quiet else ""
    return f"d={CGROUP_ROOT}$(cut -d: -f3 /proc/{ref}/cgroup{err}) && "


class SshHost:
    """The host behind a `driver+ssh://` URI: a guest virtmix built (pure cgroup v2)."""

    def __init__(self, uri: str) -> None:
        if not is_ssh_uri(uri):
            raise UsageError(f"{uri}: not an ssh URI; this verb runs where the container is")
        self.uri = uri

    def cgroup_root(self) -> str:
        return CGROUP_ROOT

    def cgroup_version(self) -> str:
        return NESTED_CGROUPS

    def shares_are_weights(self) -> bool:
        return self.cgroup_version() == "v2"  # libvirt writes <shares> to cpu.weight there

    def run(self, argv: list[str], *, timeout: float = 60) -> str:
        return run_remote(self.uri, " ".join(shlex.quote(a) for a in argv), timeout=timeout)

    def init_pid(self, name: str, controller_pid: int | None = None) -> int:
        """Like hosts.local.init_pid, by one shell per try; asks again (bounded) while the
        status file still says 0 and the controller has no child yet."""
        def attempt() -> int | None:
            res = run_argv([*ssh_argv(self.uri),
                            init_pid_sh(name, controller_pid) + 'echo "$pid"'],
                           self.uri, check=False)
            out = str(res.stdout).strip()
            if res.returncode == 0 and out.isdigit() and int(out) > 0:
                return int(out)
            if res.returncode not in (0, NOT_RUNNING):
                raise BackendError(f"{self.uri}: finding the init of {name!r} failed: "
                                   f"{str(res.stderr).strip()[-400:]}")
            return None

        pid = attempt() or (poll(attempt, timeout=INIT_WAIT, interval=0.5)
                            if controller_pid else None)
        if pid is None:
            raise StateError(f"cannot find the init process of container {name!r} on "
                             f"{self.uri}: is it running?")
        return pid

    def read_cpuset(self, pid: int) -> str | None:
        text = run_remote(self.uri, cgroup_dir_sh(pid) + "cat $d/cpuset.cpus").strip()
        return normalize_cpuset(text) if text else None

    def write_cpuset(self, pid: int, cpus: frozenset[int]) -> None:
        """Set the running container's cpuset in the guest's cgroup v2 (v2 children are
        clipped to their parent's set by the kernel, so one write is enough)."""
        run_remote(self.uri, cgroup_dir_sh(pid)
                   + f"echo {shlex.quote(format_cpuset(cpus))} > $d/cpuset.cpus")

    def run_fed(self, script: str, stdin_file: Path, label: str) -> str:
        """Run a shell script there with a local file as its stdin (streamed, not read into
        memory: a backup archive may be GiBs); its stdout, or BackendError with stderr."""
        with open(stdin_file, "rb") as f:
            res = subprocess.run([*ssh_argv(self.uri), script], stdin=f, capture_output=True,
                                 check=False)
        if res.returncode != 0:
            raise BackendError(f"{self.uri}: {label} failed (exit {res.returncode}): "
                               f"{res.stderr.decode(errors='replace').strip()[-500:]}")
        return res.stdout.decode(errors="replace")

    def push_tree(self, src: Path, dest: str, marker: str, *, marker_line: str = "",
                  check_sh: str = "", expect: str = "") -> None:
        """Copy the tree at src (ownership kept) to dest there, crash-consistently.

        The old marker goes first (a crash mid-push leaves no marker, never a stale one);
        the tree is received under dest.part, synced (`sync -f`: a guest powered off right
        after would otherwise lose what ext4 had not committed) and renamed; `check_sh`, run
        in the tree, must then print `expect` (what was sent), and only then is `marker`
        written (`marker_line`, synced, renamed into place).
        """
        from virtmix.util.faults import fault_point

        q = shlex.quote
        cdir = dest.rsplit("/", 1)[0] or "/"
        verify = (f"got=$(cd {q(dest)} && {check_sh}); if [ \"$got\" != {q(expect)} ]; then "
                  "echo \"manifest mismatch after push: $got\" >&2; exit 3; fi; "
                  if check_sh else "")
        receive = (f"set -e; mkdir -p {q(cdir)}; rm -f {q(marker)}; rm -rf {q(dest)}.part; "
                   f"mkdir {q(dest)}.part; tar -C {q(dest)}.part --numeric-owner -xpf -; "
                   f"sync -f {q(dest)}.part; rm -rf {q(dest)}; mv {q(dest)}.part {q(dest)}; "
                   + verify +
                   f"printf '%s\\n' {q(marker_line)} > {q(marker)}.tmp; sync {q(marker)}.tmp; "
                   f"mv {q(marker)}.tmp {q(marker)}; sync -f {q(cdir)}")
        tar = subprocess.Popen(["tar", "-C", str(src), "--numeric-owner", "-cpf", "-", "."],
                               stdout=subprocess.PIPE)
        fault_point("push-stream")
        ssh = subprocess.Popen([*ssh_argv(self.uri), receive], stdin=tar.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tar.stdout is not None
        tar.stdout.close()
        fault_point("push-streaming")  # both ends running: a fault here is mid-push
        _out, errout = ssh.communicate()
        if tar.wait() != 0 or ssh.returncode != 0:
            raise BackendError(f"{self.uri}: pushing a tree to {dest} failed: "
                               f"{errout.strip()[-400:]}")
