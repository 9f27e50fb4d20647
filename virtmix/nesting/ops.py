"""Admin verbs on containers behind a libvirt ssh URI (nested in a guest), run over ssh.

libvirt has no API to run a command in a container, to list its processes, to set a
running container's cpuset, or (libvirt 9.0 on cgroup v2, as in virtmix's guests) to
freeze it. Their namespaces and cgroups are on the guest, so these go over ssh, with the
same ssh setup libvirt's transport uses (virtmix's wrapper, key and pinned host keys).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlsplit

from virtmix.errors import BackendError, StateError, UsageError
from virtmix.util.faults import fault_point


def is_ssh_uri(uri: str) -> bool:
    return "+ssh" in urlsplit(uri).scheme or "+libssh" in urlsplit(uri).scheme


def ssh_argv(uri: str, *, tty: bool = False) -> list[str]:
    """The ssh command line that reaches the machine behind `uri` as libvirt does."""
    from virtmix.backend import _TRANSPORTS

    resolve = _TRANSPORTS.get(uri)
    real = urlsplit(resolve() if resolve else uri)
    if not is_ssh_uri(uri) or not real.hostname:
        raise UsageError(f"{uri}: not an ssh URI; this verb runs where the container is")
    query = dict(parse_qsl(real.query))
    argv = [query.get("command", "ssh"), "-t" if tty else "-T"]
    if real.port:
        argv += ["-p", str(real.port)]
    if "keyfile" in query:
        argv += ["-i", query["keyfile"]]
    if not resolve:
        argv += ["-o", "BatchMode=yes"]
    argv.append(f"{real.username}@{real.hostname}" if real.username else real.hostname)
    return argv


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


def attach(uri: str, name: str, argv: list[str], controller_pid: int | None = None) -> int:
    """Run argv in the container's namespaces on the guest; its exit code (ssh passes it)."""
    cmd = " ".join(shlex.quote(a) for a in (argv or ["/bin/sh"]))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    script = _init_pid_sh(name, controller_pid) + f"exec nsenter -t \"$pid\" -a -- {cmd}"
    return subprocess.run([*ssh_argv(uri, tty=tty), script], check=False).returncode


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

    from virtmix.render.views import container_rootfs, is_privileged
    from virtmix.rootfs import Storage, provision_container, remove_container_tree
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    dest = container_rootfs(site, entry)
    cdir = posixpath.dirname(dest)
    q = shlex.quote
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
    made = provision_container(staged, spec, setup, storage, privileged=is_privileged(entry))
    try:
        want = local_manifest(made.path)
        marker = posixpath.join(cdir, PUSHED)
        line = f"{push_key(site, entry)} {want}"
        # Old marker first: a crash mid-push leaves no marker, never a stale one.
        receive = (f"set -e; mkdir -p {q(cdir)}; rm -f {q(marker)}; rm -rf {q(dest)}.part; "
                   f"mkdir {q(dest)}.part; tar -C {q(dest)}.part --numeric-owner -xpf -; "
                   f"sync -f {q(dest)}.part; rm -rf {q(dest)}; mv {q(dest)}.part {q(dest)}; "
                   f"got=$(cd {q(dest)} && {MANIFEST_SH}); "
                   f"if [ \"$got\" != {q(want)} ]; then echo \"manifest mismatch after push: "
                   f"$got\" >&2; exit 3; fi; "
                   f"printf '%s\\n' {q(line)} > {q(marker)}.tmp; sync {q(marker)}.tmp; "
                   f"mv {q(marker)}.tmp {q(marker)}; sync -f {q(cdir)}")
        tar = subprocess.Popen(["tar", "-C", str(made.path), "--numeric-owner", "-cpf", "-",
                                "."], stdout=subprocess.PIPE)
        fault_point("push-stream")
        ssh = subprocess.Popen([*ssh_argv(entry.uri), receive], stdin=tar.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tar.stdout is not None
        tar.stdout.close()
        fault_point("push-streaming")  # both ends running: a fault here is mid-push
        _out, errout = ssh.communicate()
        if tar.wait() != 0 or ssh.returncode != 0:
            raise BackendError(f"{entry.address}: pushing its tree to {dest} in guest "
                               f"{entry.parent} failed: {errout.strip()[-400:]}")
        fault_point("push-done")
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
