"""Admin verbs on containers behind a libvirt ssh URI (nested in a guest), run over ssh.

libvirt has no API to run a command in a container, to list its processes, to set a
running container's cpuset, or (libvirt 9.0 on cgroup v2, as in virtmix's guests) to
freeze it. Their namespaces and cgroups are on the guest, so these go over ssh, with the
same ssh setup libvirt's transport uses (virtmix's wrapper, key and pinned host keys).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlsplit

from virtmix.errors import BackendError, StateError, UsageError


def is_ssh_uri(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower()  # URI schemes are case-insensitive (RFC 3986)
    return "+ssh" in scheme or "+libssh" in scheme


def ssh_argv(uri: str, *, tty: bool = False) -> list[str]:
    """The ssh command line that reaches the machine behind `uri` as libvirt does."""
    from virtmix.backend import _TRANSPORTS

    resolve = _TRANSPORTS.get(uri)
    real = urlsplit(resolve() if resolve else uri)
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
    if not resolve:
        argv += ["-o", "BatchMode=yes"]
    return [*argv, "--", host]


def run_remote(uri: str, script: str, *, timeout: float = 60) -> str:
    """Run a shell script on the guest; its stdout, or BackendError with its stderr."""
    try:
        res = subprocess.run([*ssh_argv(uri), script], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{uri}: remote command took over {timeout:g}s") from None
    if res.returncode != 0:
        raise BackendError(f"{uri}: remote command failed (exit {res.returncode}): "
                           f"{res.stderr.strip()[-400:]}")
    return res.stdout


def _init_pid_sh(name: str, controller_pid: int | None = None) -> str:
    """Shell that sets $pid to the container's init pid.

    libvirt's status file names it once the controller reported it; until then (or if that
    report got lost: one CI run saw a container whose status never named it) the init is
    the only child of the libvirt_lxc controller, whose pid is the domain's ID. The local
    verbs use the same two sources (backend.lxc_host.init_pid).
    """
    status = shlex.quote(f"/run/libvirt/lxc/{name}.xml")
    fallback = ""
    if controller_pid:
        kids = f"/proc/{controller_pid}/task/{controller_pid}/children"
        fallback = (f"[ -n \"$pid\" ] && [ \"$pid\" != 0 ] || "
                    f"pid=$(cut -d' ' -f1 {kids} 2>/dev/null); ")
    return (f"pid=$(sed -n \"s/.*<init pid='\\([0-9]*\\)'.*/\\1/p\" {status} 2>/dev/null); "
            + fallback +
            f"[ -n \"$pid\" ] && [ \"$pid\" != 0 ] || "
            f"{{ echo 'container {name} is not running there' >&2; exit 125; }}; ")


CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _command_check_sh(name: str, word: str) -> str:
    """Shell that prints 127/126 when the container lacks `word` or cannot execute it.

    Looked up below /proc/$pid/root; a symlink there is taken as present (its target would
    resolve against the guest's root, not the container's).
    """
    q = shlex.quote
    if "/" in word:
        return (f"c=\"/proc/$pid/root\"{q(word)}; if [ -L \"$c\" ]; then echo 0; "
                "elif [ ! -e \"$c\" ]; then echo 127; elif [ -f \"$c\" ] && [ -x \"$c\" ]; "
                "then echo 0; else echo 126; fi")
    return (f"r=127; for d in {' '.join(q(d) for d in CONTAINER_PATH.split(':'))}; do "
            f"c=\"/proc/$pid/root$d/\"{q(word)}; if [ -L \"$c\" ]; then r=0; break; fi; "
            "if [ -f \"$c\" ]; then if [ -x \"$c\" ]; then r=0; break; fi; r=126; fi; "
            "done; echo $r")


def attach(uri: str, name: str, argv: list[str], controller_pid: int | None = None) -> int:
    """Run argv in the container's namespaces on the guest; its exit code (ssh passes it).

    With a terminal, ssh -t gives the command a pseudo-terminal of the guest's sshd (the
    admin's terminal stays with the local ssh process); without one, pipes. Ctrl-C: on a
    terminal it travels as a byte to that pty and ends the command; the remote shell traps
    it (instead of dying with it, which ssh would report as 255) and exits with nsenter's
    130. A SIGINT to virtmix's process group ends the local ssh: virtmix then exits 130.
    """
    from virtmix.errors import CommandNotExecutableError, CommandNotFoundError

    words = argv or ["/bin/sh"]
    code = run_remote(uri, _init_pid_sh(name, controller_pid)
                      + _command_check_sh(name, words[0])).strip()
    if code == "127":
        raise CommandNotFoundError(f"{words[0]}: command not found in {name}")
    if code == "126":
        raise CommandNotExecutableError(f"{words[0]}: not executable in {name} (permission "
                                        "denied or a directory)")
    cmd = " ".join(shlex.quote(a) for a in words)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    script = (_init_pid_sh(name, controller_pid)
              + f"trap : INT; nsenter -t \"$pid\" -a -- {cmd}; exit $?")
    interrupted: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, _f: interrupted.append(sig))
    try:
        proc = subprocess.Popen([*ssh_argv(uri, tty=tty), script])
        while True:
            try:
                code_ = proc.wait()
                break
            except InterruptedError:
                continue
    finally:
        signal.signal(signal.SIGINT, old)
    if interrupted and code_ in (255, -signal.SIGINT):
        return 130  # ssh itself was interrupted
    return code_ if code_ >= 0 else 128 - code_


@dataclass
class RemoteProc:
    container: str
    pid: int  # in the guest
    ppid: int
    uid: int
    ns_pid: int  # inside the container
    cmd: str


def ps(uri: str, containers: dict[str, tuple[str, int | None]]) -> list[RemoteProc]:
    """Processes of the running containers {name: (address, domain ID)} on the guest behind
    uri."""
    if not containers:
        return []
    loop = "".join(
        f"( {_init_pid_sh(n, i)}echo \"ns $(readlink /proc/$pid/ns/pid) {shlex.quote(a)}\" ); "
        for n, (a, i) in containers.items())
    script = loop + (
        "for p in /proc/[0-9]*; do ns=$(readlink $p/ns/pid 2>/dev/null) || continue; "
        "st=$(awk '/^PPid:/{pp=$2} /^Uid:/{u=$2} /^NSpid:/{n=$NF} END{print pp, u, n}' "
        "$p/status 2>/dev/null) || continue; "
        "cmd=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
        "echo \"p ${p#/proc/} $ns $st $cmd\"; done")
    spaces: dict[str, str] = {}
    rows = []
    for line in run_remote(uri, script).splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "ns":
            ns, _, address = rest.partition(" ")
            spaces[ns] = address
        elif kind == "p":
            pid, ns, ppid, uid, nspid, *cmd = rest.split(" ")
            if ns in spaces and nspid.isdigit():
                rows.append(RemoteProc(spaces[ns], int(pid), int(ppid), int(uid), int(nspid),
                                       " ".join(cmd).strip()))
    return sorted(rows, key=lambda r: (r.container, r.pid))


def _cgroup_dir_sh(dom_id: int) -> str:
    return f"d=/sys/fs/cgroup$(cut -d: -f3 /proc/{int(dom_id)}/cgroup); "


def read_cpuset(uri: str, dom_id: int) -> str:
    return run_remote(uri, _cgroup_dir_sh(dom_id) + "cat $d/cpuset.cpus").strip()


def write_cpuset(uri: str, dom_id: int, cpuset: str) -> None:
    """Set the running container's cpuset in the guest's cgroup v2 (children follow)."""
    run_remote(uri, _cgroup_dir_sh(dom_id) + f"echo {shlex.quote(cpuset)} > $d/cpuset.cpus")


def frozen(uri: str, dom_id: int) -> bool:
    out = run_remote(uri, _cgroup_dir_sh(dom_id) + "cat $d/cgroup.events")
    return "frozen 1" in out.splitlines()


def frozen_ids(uri: str, ids: list[int]) -> set[int]:
    """Which of these running containers (libvirt ids in the guest) are frozen there: one
    ssh call for all. libvirt still reports them `running` (see set_frozen)."""
    if not ids:
        return set()
    script = (f"for id in {' '.join(str(int(i)) for i in ids)}; do "
              "d=/sys/fs/cgroup$(cut -d: -f3 /proc/$id/cgroup 2>/dev/null) && "
              "grep -qx 'frozen 1' $d/cgroup.events 2>/dev/null && echo $id; done; true")
    return {int(x) for x in run_remote(uri, script).split()}


def set_frozen(uri: str, dom_id: int, on: bool, address: str, timeout: float = 10) -> None:
    """Freeze or thaw through cgroup.freeze: libvirt 9.0 cannot on cgroup v2 ("failed to
    get cgroup backend for 'setFreezerState'"), and virtmix's guests are pure v2."""
    want = "1" if on else "0"
    if frozen(uri, dom_id) == on:
        verb = "freeze" if on else "unfreeze"
        raise StateError(f"{verb}: {address} is {'already frozen' if on else 'not frozen'}")
    run_remote(uri, _cgroup_dir_sh(dom_id) + f"echo {want} > $d/cgroup.freeze")
    deadline = time.monotonic() + timeout
    while frozen(uri, dom_id) != on:
        if time.monotonic() > deadline:
            raise BackendError(f"{address}: cgroup.freeze={want} did not take effect in "
                               f"{timeout:g}s")
        time.sleep(0.2)


# -- trees of nested containers: built on the host, pushed into the guest ------------------
PUSHED = ".virtmix-pushed"


def push_tree(site, entry) -> str:
    """Give a nested container with `rootfs: {distro: ...}` its tree in the guest.

    The rootfs subsystem builds and customises it on the host (cached base, per-container
    clone, ownership shifted for <idmap> unless privileged) in a staging storage of the
    guest's own; tar streams it over ssh to the path the definition names, under a
    temporary name renamed at the end, so an interrupted push is redone, never half used.
    A tree already pushed is kept. Returns the tree's path in the guest.
    """
    import posixpath

    from virtmix.render.views import container_idmap, container_rootfs, is_privileged
    from virtmix.rootfs import Storage, provision_container, remove_container_tree
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    dest = container_rootfs(site, entry)
    cdir = posixpath.dirname(dest)
    q = shlex.quote
    if run_remote(entry.uri, f"test -f {q(cdir + '/' + PUSHED)} && echo yes || true"
                  ).strip() == "yes":
        return dest
    # Staged in the site's own storage (its base-tree cache is shared) under a name no
    # container of this host has; hostname and the rest are the nested container's.
    storage = Storage(site.inventory.settings.storage_dir)
    staged = f"push--{entry.parent}--{entry.name}"[:63]
    setup = setup_from_model(entry.name, entry.spec, site.inventory.networks)
    setup = replace(setup, name=staged, hostname=setup.hostname or entry.name)
    spec = spec_from_model(entry.spec.rootfs, base_dir=site.path.parent,
                           mirror=site.inventory.settings.mirror)
    if storage.read_state(staged) is not None:  # left by an interrupted push: start over
        remove_container_tree(storage, staged)
    # Shifted to the nested container's range in the guest's id space (not this host's).
    made = provision_container(staged, spec, setup, storage, privileged=is_privileged(entry),
                               idmap=container_idmap(site, entry), check_overlap=False)
    try:
        receive = (f"set -e; mkdir -p {q(cdir)}; rm -rf {q(dest)}.part; mkdir {q(dest)}.part; "
                   f"tar -C {q(dest)}.part --numeric-owner -xpf -; rm -rf {q(dest)}; "
                   f"mv {q(dest)}.part {q(dest)}; touch {q(cdir + '/' + PUSHED)}")
        tar = subprocess.Popen(["tar", "-C", str(made.path), "--numeric-owner", "-cpf", "-",
                                "."], stdout=subprocess.PIPE)
        res = subprocess.run([*ssh_argv(entry.uri), receive], stdin=tar.stdout,
                             capture_output=True, text=True, check=False)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or res.returncode != 0:
            raise BackendError(f"{entry.address}: pushing its tree to {dest} in guest "
                               f"{entry.parent} failed: {res.stderr.strip()[-400:]}")
    finally:
        remove_container_tree(storage, staged)
    return dest


def delete_pushed_tree(uri: str, dest: str) -> bool:
    """Delete a tree push_tree made in a guest (only those: it checks the marker)."""
    import posixpath

    cdir = posixpath.dirname(dest)
    q = shlex.quote
    out = run_remote(uri, f"if [ -f {q(cdir + '/' + PUSHED)} ]; then rm -rf {q(cdir)}; "
                          "echo deleted; fi")
    return out.strip() == "deleted"


def delete_remote_files(uri: str, name: str, xml: str) -> list[str]:
    """destroy --delete-rootfs of a container behind an ssh URI: its pushed tree, there."""
    from virtmix.converge.observe import parse_xml

    if not is_ssh_uri(uri):
        return []
    gone = []
    for fs in parse_xml(xml).findall("devices/filesystem"):
        src, tgt = fs.find("source"), fs.find("target")
        if src is None or tgt is None or tgt.get("dir") != "/":
            continue
        path = src.get("dir", "")
        if path.endswith(f"/containers/{name}/rootfs") and delete_pushed_tree(uri, path):
            gone.append(f"{path.removesuffix('/rootfs')} (in the guest)")
    return gone
