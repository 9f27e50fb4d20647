"""Admin verbs on containers behind a libvirt ssh URI (nested in a guest), run over ssh.

libvirt has no API to run a command in a container, to list its processes, to set a
running container's cpuset, or (libvirt 9.0 on cgroup v2, as in virtmix's guests) to
freeze it. Their namespaces and cgroups are on the guest, so these go over ssh, with the
same ssh setup libvirt's transport uses (virtmix's wrapper, key and pinned host keys).
What any host offers (init pid, cpuset, running a command, pushing a tree) is in
hosts.ssh; what is here is specific to the admin verbs and to nesting.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, replace

from virtmix.errors import BackendError, StateError
from virtmix.hosts.local import CONTAINER_PATH
from virtmix.hosts.ssh import SshHost, cgroup_dir_sh, init_pid_sh, run_remote, ssh_argv
from virtmix.util.faults import fault_point
from virtmix.util.polling import wait_until
from virtmix.util.uris import is_ssh_uri


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
    code = run_remote(uri, init_pid_sh(name, controller_pid)
                      + _command_check_sh(name, words[0])).strip()
    if code == "127":
        raise CommandNotFoundError(f"{words[0]}: command not found in {name}")
    if code == "126":
        raise CommandNotExecutableError(f"{words[0]}: not executable in {name} (permission "
                                        "denied or a directory)")
    cmd = " ".join(shlex.quote(a) for a in words)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    script = (init_pid_sh(name, controller_pid)
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
        f"( {init_pid_sh(n, i)}echo \"ns $(readlink /proc/$pid/ns/pid) {shlex.quote(a)}\" ); "
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


def frozen(uri: str, dom_id: int) -> bool:
    out = run_remote(uri, cgroup_dir_sh(dom_id) + "cat $d/cgroup.events")
    return "frozen 1" in out.splitlines()


def frozen_ids(uri: str, ids: list[int]) -> set[int]:
    """Which of these running containers (libvirt ids in the guest) are frozen there: one
    ssh call for all. libvirt still reports them `running` (see set_frozen)."""
    if not ids:
        return set()
    script = (f"for id in {' '.join(str(int(i)) for i in ids)}; do "
              + cgroup_dir_sh("$id", quiet=True) +
              "grep -qx 'frozen 1' $d/cgroup.events 2>/dev/null && echo $id; done; true")
    return {int(x) for x in run_remote(uri, script).split()}


def set_frozen(uri: str, dom_id: int, on: bool, address: str, timeout: float = 10) -> None:
    """Freeze or thaw through cgroup.freeze: libvirt 9.0 cannot on cgroup v2 ("failed to
    get cgroup backend for 'setFreezerState'"), and virtmix's guests are pure v2."""
    want = "1" if on else "0"
    if frozen(uri, dom_id) == on:
        verb = "freeze" if on else "unfreeze"
        raise StateError(f"{verb}: {address} is {'already frozen' if on else 'not frozen'}")
    run_remote(uri, cgroup_dir_sh(dom_id) + f"echo {want} > $d/cgroup.freeze")
    if not wait_until(lambda: frozen(uri, dom_id) == on, timeout=timeout, interval=0.2):
        raise BackendError(f"{address}: cgroup.freeze={want} did not take effect in "
                           f"{timeout:g}s")


# -- trees of nested containers: built on the host, pushed into the guest ------------------
PUSHED = ".virtmix-pushed"
# A manifest of the package-managed part of a tree (sizes and paths of the files under
# usr/ and the top-level lib/bin dirs), digested: the same shell runs on the host over the
# staged tree and in the guest over the pushed one. A file left empty or short by a power
# cut before the guest synced it ("libkmod.so.2: file too short") changes the digest.
MANIFEST_SH = (
    "for d in usr bin sbin lib lib32 lib64 libx32; do "
    "if [ -d \"$d\" ] && [ ! -L \"$d\" ]; then find \"$d\" -xdev -type f -printf '%s %p\\n'; fi; "
    "done | LC_ALL=C sort | sha256sum | cut -d' ' -f1")


def push_key(site, entry) -> str:
    """A digest of what would be pushed now: the tree's spec and the container's setup."""
    import dataclasses
    import hashlib
    import json

    from virtmix.render.views import is_privileged
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    spec = spec_from_model(entry.spec.rootfs, base_dir=site.path.parent,
                           mirror=site.inventory.settings.mirror)
    setup = setup_from_model(entry.name, entry.spec, site.inventory.networks)
    blob = json.dumps([spec.cache_key(), dataclasses.asdict(setup), is_privileged(entry)],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def local_manifest(tree) -> str:
    res = subprocess.run(["sh", "-c", MANIFEST_SH], cwd=str(tree), capture_output=True,
                         text=True, check=False)
    if res.returncode != 0 or not res.stdout.strip():
        raise BackendError(f"cannot list {tree} for its manifest: {res.stderr.strip()}")
    return res.stdout.strip()


def pushed_state(uri: str, dest: str) -> tuple[str, str]:
    """(marker, manifest digest of the tree now) in the guest; '' where absent."""
    import posixpath

    q = shlex.quote
    marker = posixpath.join(posixpath.dirname(dest), PUSHED)
    out = run_remote(uri, f"echo \"M:$(cat {q(marker)} 2>/dev/null)\"; "
                          f"if [ -d {q(dest)} ]; then cd {q(dest)} && echo \"D:$({MANIFEST_SH})\"; "
                          "fi", timeout=120)
    got = dict(line.split(":", 1) for line in out.splitlines() if line[:2] in ("M:", "D:"))
    return got.get("M", "").strip(), got.get("D", "").strip()


def pushed_tree_ok(site, entry, dest: str) -> tuple[bool, str]:
    """Is the tree in the guest the one that would be pushed now, whole? (ok, why not)"""
    marker, digest = pushed_state(entry.uri, dest)
    if not marker:
        return False, "no marker (never pushed, or interrupted)"
    key, _, want = marker.partition(" ")
    if key != push_key(site, entry):
        return False, "its marker records another tree (the inventory changed)"
    if not digest or digest != want:
        return False, "its files no longer match the marker's manifest (not synced before " \
                      "a crash?)"
    return True, ""


def push_tree(site, entry) -> str:
    """Give a nested container with `rootfs: {distro: ...}` its tree in the guest.

    The rootfs subsystem builds and customises it on the host (cached base, per-container
    clone, ownership shifted for <idmap> unless privileged) in a staging storage of the
    guest's own; tar streams it over ssh to the path the definition names, under a
    temporary name renamed at the end, so an interrupted push is redone, never half used.
    The guest syncs the tree before the marker is written (and syncs the marker); the
    marker records what was pushed (push_key) and a manifest digest of the tree. A tree is
    reused only when both still match; otherwise it is pushed again. Returns its path.
    """
    import posixpath

    from virtmix.inventory.site import is_privileged
    from virtmix.render.views import container_idmap, container_rootfs
    from virtmix.rootfs import Storage, provision_container, remove_container_tree
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    dest = container_rootfs(site, entry)
    cdir = posixpath.dirname(dest)
    ok, _why = pushed_tree_ok(site, entry, dest)
    if ok:
        return dest
    fault_point("push-begin")
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
        want = local_manifest(made.path)
        SshHost(entry.uri).push_tree(made.path, dest, posixpath.join(cdir, PUSHED),
                                     marker_line=f"{push_key(site, entry)} {want}",
                                     check_sh=MANIFEST_SH, expect=want)
        fault_point("push-done")
    except BackendError as exc:
        raise BackendError(f"{entry.address}: pushing its tree to {dest} in guest "
                           f"{entry.parent} failed: {exc.message}") from None
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
    from virtmix.domain import filesystem, xmlnode

    if not is_ssh_uri(uri):
        return []
    gone = []
    path = filesystem.root_tree(xmlnode.parse(xml)) or ""
    if path.endswith(f"/containers/{name}/rootfs") and delete_pushed_tree(uri, path):
        gone.append(f"{path.removesuffix('/rootfs')} (in the guest)")
    return gone
