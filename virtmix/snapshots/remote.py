"""Container snapshots on another libvirt host (an `lxc+ssh://` URI): the tree work, there.

The layout is the one trees.py keeps on this machine (STORAGE/snapshots/NAME/SNAP/ with
snapshot.json, data/ and the marker), in the storage directory of that host (the path the
inventory's storage_dir names, as `restore --host` uses). Every step is a shell script run
on that host over ssh (hosts.ssh: the ssh command, key and pinned host key of libvirt's
transport), one script per host and step (not per container), so a site's remote members
cost one ssh round trip each step; freezing and thawing stay libvirt calls through the
domain's own connection. The far host needs only sh, cp, mv, rm, sync and cat.

Crash safety as here: a snapshot is copied into a hidden `.SNAP.part-TAG` directory, synced,
then renamed (a snapshot is complete iff its directory exists). TAG names this machine and
process (`HOST-PID`): a later snapshot of that domain from this machine removes what a killed
one left (its pid is dead here); another machine's parts are left alone. A restore copies
the snapshot beside the tree while the container still runs and swaps by rename while it is
off: a crash leaves the old tree or the new one, never a mix.

Overlay clones are a layout of this machine only (virtmix pushes plain trees to other
hosts); a tree whose state says overlay there is refused.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtmix.errors import BackendError, ConflictError, NotFoundError, UsageError
from virtmix.rootfs.snapshot_dirs import MARKER, META, SNAPSHOTS_DIR, built_storage
from virtmix.snapshots.trees import check_snapshot_name

q = shlex.quote
# (uri, script, stdin) -> stdout; BackendError on failure. Tests run the scripts with sh.
Runner = Callable[[str, str, str | None], str]
BUILT_MARKERS = (".virtmix-container", ".virtmix-pushed")  # rootfs.storage, nesting.ops
COPY_TIMEOUT = 3600.0


def ssh_runner(uri: str, script: str, stdin: str | None = None) -> str:
    """Run `script` on the host behind uri over ssh (set -e); its stdout."""
    from virtmix.hosts.ssh import run_argv, ssh_argv

    res = run_argv([*ssh_argv(uri), "set -e; " + script], uri, timeout=COPY_TIMEOUT,
                   input=stdin if stdin is not None else "")
    return str(res.stdout)


RUNNER: Runner = ssh_runner  # what runs the scripts (tests put sh here instead of ssh)


def _run(run: Runner | None) -> Runner:
    return run or RUNNER


def tag() -> str:
    """This process, as the far host's hidden directories name it."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True)
class RemoteSource:
    """A container's tree on another host, and the storage its snapshots go to there."""

    uri: str
    storage: str  # the storage directory there (holds snapshots/)
    tree: str

    @property
    def snap_root(self) -> str:
        return posixpath.join(self.storage, SNAPSHOTS_DIR)

    def snapshots_of(self, name: str) -> str:
        return posixpath.join(self.storage, SNAPSHOTS_DIR, name)


def sources(uri: str, trees: list[str], default_storage: list[str],
            run: Runner | None = None) -> list[RemoteSource]:
    """Where each tree is and where its snapshots go, asked there in one script: a tree
    virtmix made there (its container dir has virtmix's marker) keeps them in the storage
    it lives in, any other tree in `default_storage` (the site's storage_dir)."""
    run = _run(run)
    lines = []
    for i, tree in enumerate(trees):
        cdir = posixpath.dirname(tree)
        markers = " || ".join(f"[ -f {q(posixpath.join(cdir, m))} ]" for m in BUILT_MARKERS)
        state = q(posixpath.join(cdir, "state.json"))
        lines.append(
            f"if [ ! -d {q(tree)} ]; then echo '{i} missing'; "
            f"elif {markers}; then printf '{i} built '; "
            f"if [ -f {state} ]; then tr -d '\\n' < {state}; fi; echo; "
            f"else echo '{i} given'; fi")
    out = run(uri, "\n".join(lines), None).splitlines()
    found: dict[int, tuple[str, str]] = {}
    for line in out:
        idx, _, rest = line.partition(" ")
        kind, _, state = rest.partition(" ")
        if idx.isdigit():
            found[int(idx)] = (kind, state)
    result = []
    for i, tree in enumerate(trees):
        kind, state = found.get(i, ("missing", ""))
        if kind == "missing":
            raise NotFoundError(f"the container's tree {tree} does not exist on {uri}")
        storage = default_storage[i]
        if kind == "built" and (built := built_storage(tree)):
            storage = built
            try:
                method = json.loads(state).get("method") if state else None
            except ValueError:
                method = None
            if method == "overlay":
                raise UsageError(f"{tree} on {uri} is an overlay clone; virtmix snapshots "
                                 "overlay clones on this machine only",
                                 hint="run virtmix on that host for this container")
        result.append(RemoteSource(uri, storage, tree))
    return result


def alive_sh() -> str:
    """Shell setting $alive to this machine's pids (the far host cannot see them)."""
    return "alive=' " + " ".join(p for p in os.listdir("/proc") if p.isdigit()) + " '"


def _prune_sh(parent: str) -> str:
    """Shell removing the hidden parts this machine's dead virtmix processes left in
    parent (needs alive_sh before it); another machine's are left alone."""
    host = tag().rsplit("-", 1)[0]
    return (f"for p in {q(parent)}/.*.part-{host}-*; do "
            f"[ -d \"$p\" ] && [ ! -L \"$p\" ] || continue; pid=${{p##*-}}; "
            f"case \"$alive\" in *\" $pid \"*) ;; *) rm -rf -- \"$p\";; esac; done")


@dataclass
class Job:
    """One remote member of a snapshot: its source, name there and hidden/final dirs."""

    src: RemoteSource
    name: str
    info: dict[str, Any]
    part: str = ""
    final: str = ""


def begin(jobs: list[Job], snap: str, run: Runner | None = None) -> None:
    """Before the freeze, per host: prune dead parts, refuse a name taken (ConflictError),
    make the hidden directories (0700: they will hold whole systems)."""
    run = _run(run)
    check_snapshot_name(snap)
    me = tag()
    for uri, group in _by_host(jobs).items():
        lines = [alive_sh()]
        for j in group:
            parent = j.src.snapshots_of(j.name)
            j.final = posixpath.join(parent, snap)
            j.part = posixpath.join(parent, f".{snap}.part-{me}")
            lines.append(
                f"if [ -e {q(j.final)} ] || [ -L {q(j.final)} ]; then "
                f"echo {q(f'TAKEN {j.name}')}; exit 0; fi")
        for j in group:
            parent = posixpath.dirname(j.final)
            lines += [f"mkdir -p -m 0700 {q(posixpath.dirname(parent))}",
                      f"mkdir -p -m 0700 {q(parent)}", _prune_sh(parent),
                      f"rm -rf -- {q(j.part)}", f"mkdir -m 0700 {q(j.part)}",
                      f": > {q(posixpath.join(j.part, MARKER))}"]
        out = run(uri, "\n".join(lines), None)
        for line in out.splitlines():
            if line.startswith("TAKEN "):
                name = line[len("TAKEN "):]
                raise ConflictError(f"{name} already has a snapshot named {snap!r} on {uri}",
                                    hint="choose another --name, or remove it with "
                                         f"`virtmix snapshot rm {name} {snap}`")


def _by_host(jobs: list[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for j in jobs:
        groups.setdefault(j.src.uri, []).append(j)
    return groups


def copy_sh(pairs: list[tuple[str, str]]) -> str:
    """Shell running `cp -a` of each (src, dst) side by side; fails if any failed."""
    lines = ["fail=0; pids="]
    for src, dst in pairs:
        lines.append(f"cp -a --reflink=auto -- {q(src)} {q(dst)} & pids=\"$pids $!\"")
    lines.append("for p in $pids; do wait $p || fail=1; done; exit $fail")
    return "\n".join(lines)


def copy(jobs: list[Job], run: Runner | None = None) -> None:
    """The copies (the members are frozen): one script per host, the hosts side by side."""
    run = _run(run)
    _per_host(jobs, lambda uri, group: run(
        uri, copy_sh([(j.src.tree, posixpath.join(j.part, "data")) for j in group]), None))


def _per_host(jobs: list[Any], fn: Callable[[str, list[Any]], Any]) -> None:
    """fn(uri, jobs of that host) for every host at once; the first error once all end."""
    from concurrent.futures import ThreadPoolExecutor

    groups = _by_host(jobs)
    if len(groups) < 2:
        for uri, group in groups.items():
            fn(uri, group)
        return
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [pool.submit(fn, uri, group) for uri, group in groups.items()]
    for f in futures:
        f.result()


def commit(jobs: list[Job], snap: str, created: str, run: Runner | None = None) -> None:
    """Record each snapshot, sync once per host, rename each into place (complete)."""
    run = _run(run)
    def one_host(uri: str, group: list[Job]) -> None:
        lines, records = [], []
        for j in group:
            meta = {**j.info, "name": snap, "domain": j.name, "method": "tree",
                    "cache_entry": None, "tree": j.src.tree, "created": created}
            records.append(json.dumps(meta, sort_keys=True))
            tmp = posixpath.join(j.part, f".{META}.tmp")
            lines += ["IFS= read -r line", f"printf '%s\\n' \"$line\" > {q(tmp)}",
                      f"mv {q(tmp)} {q(posixpath.join(j.part, META))}"]
        lines.append(f"sync -f {q(group[0].part)} 2>/dev/null || sync")
        for j in group:
            lines.append(f"mv {q(j.part)} {q(j.final)}")
        lines.append(f"sync -f {q(posixpath.dirname(group[0].final))} 2>/dev/null || sync")
        run(uri, "\n".join(lines), "\n".join(records) + "\n")
    _per_host(jobs, one_host)


def abandon(jobs: list[Job], run: Runner | None = None) -> None:
    """Remove the hidden directories of a snapshot that failed (best effort)."""
    run = _run(run)
    def one_host(uri: str, group: list[Job]) -> None:
        paths = " ".join(q(j.part) for j in group if j.part)
        if paths:
            run(uri, f"rm -rf -- {paths}", None)
    try:
        _per_host(jobs, one_host)
    except BackendError:
        pass


def list_for(src: RemoteSource, name: str, run: Runner | None = None) -> list[dict[str, Any]]:
    """The complete snapshots of `name` there, oldest first."""
    return list_many([(src, name)], run)[0]


def _list_sh(i: int, parent: str) -> str:
    return (f"if [ -d {q(parent)} ]; then for d in {q(parent)}/*; do "
            f"[ -d \"$d\" ] && [ ! -L \"$d\" ] && [ -f \"$d/{META}\" ] || continue; "
            f"printf '{i}\\t%s\\t' \"$d\"; tr -d '\\n' < \"$d/{META}\"; echo; done; fi")


def list_many(items: list[tuple[RemoteSource, str]],
              run: Runner | None = None) -> list[list[dict[str, Any]]]:
    """list_for of several containers: one script per host, the hosts side by side."""
    run = _run(run)
    found: list[list[dict[str, Any]]] = [[] for _ in items]

    class _Item:
        def __init__(self, i: int, src: RemoteSource, name: str) -> None:
            self.i, self.src, self.name = i, src, name

    def one_host(uri: str, group: list[_Item]) -> None:
        out = run(uri, "\n".join(_list_sh(it.i, it.src.snapshots_of(it.name))
                                 for it in group), None)
        for line in out.splitlines():
            idx, _, rest = line.partition("\t")
            path, _, text = rest.partition("\t")
            try:
                meta = json.loads(text)
            except ValueError:
                continue  # not a complete snapshot
            if idx.isdigit() and isinstance(meta, dict) and "name" in meta:
                found[int(idx)].append(meta | {"path": path})

    _per_host([_Item(i, s, n) for i, (s, n) in enumerate(items)], one_host)
    return [sorted(f, key=lambda m: (m.get("created", ""), m["name"])) for f in found]


def find(src: RemoteSource, name: str, snap: str, run: Runner | None = None) -> dict[str, Any]:
    return find_many([(src, name)], snap, run)[0]


def find_many(items: list[tuple[RemoteSource, str]], snap: str,
              run: Runner | None = None) -> list[dict[str, Any]]:
    """Snapshot `snap` of each container (NotFoundError naming the first that lacks it)."""
    check_snapshot_name(snap)
    metas = []
    for (src, name), have in zip(items, list_many(items, run), strict=True):
        meta = next((m for m in have if m["name"] == snap), None)
        if meta is None:
            names = ", ".join(m["name"] for m in have) or "none"
            raise NotFoundError(f"{name} has no snapshot named {snap!r} on {src.uri} "
                                f"(snapshots: {names})",
                                hint=f"see `virtmix snapshot ls {name}`")
        metas.append(meta)
    return metas


def remove(src: RemoteSource, name: str, snap: str, run: Runner | None = None) -> None:
    """Delete a snapshot there (only a directory with the snapshot marker)."""
    run = _run(run)
    path = find(src, name, snap, run)["path"]
    run(src.uri, f"[ -f {q(posixpath.join(path, MARKER))} ] || "
                 f"{{ echo 'not a virtmix snapshot: {path}' >&2; exit 3; }}; "
                 f"rm -rf -- {q(path)}; sync -f {q(posixpath.dirname(path))} 2>/dev/null "
                 "|| true", None)


@dataclass
class RemoteSwap:
    """A remote container's restore: the snapshot copied beside its tree while it runs,
    swapped in by two renames while it is off, the old tree removed."""

    src: RemoteSource
    run: Runner
    new: str
    old: str

    def swap_in(self) -> None:
        t = self.src.tree
        self.run(self.src.uri, f"mv {q(t)} {q(self.old)}; mv {q(self.new)} {q(t)}; "
                               f"sync -f {q(posixpath.dirname(t))} 2>/dev/null || true", None)


def swap_all(swaps: list[RemoteSwap]) -> None:
    """swap_in of every container (all shut off): one script per host, side by side."""
    def one_host(uri: str, group: list[RemoteSwap]) -> None:
        lines = [f"mv {q(s.src.tree)} {q(s.old)}; mv {q(s.new)} {q(s.src.tree)}"
                 for s in group]
        lines.append(f"sync -f {q(posixpath.dirname(group[0].src.tree))} 2>/dev/null || true")
        group[0].run(uri, "\n".join(lines), None)
    _per_host(swaps, one_host)


def _check_fits(src: RemoteSource, meta: dict[str, Any]) -> None:
    if meta.get("method") != "tree":
        raise ConflictError(f"snapshot {meta['name']} holds a {meta.get('method')} copy; "
                            f"the container's tree on {src.uri} is a whole tree")


def prepare_many(jobs: list[tuple[RemoteSource, dict[str, Any]]],
                 run: Runner | None = None) -> list[RemoteSwap]:
    """Copy each snapshot beside its tree (per host side by side, one sync); a failure
    removes every copy."""
    run = _run(run)
    for src, meta in jobs:
        _check_fits(src, meta)
    me = tag()
    swaps = []
    for src, _meta in jobs:
        parent, base = posixpath.split(src.tree.rstrip("/"))
        swaps.append(RemoteSwap(src, run, posixpath.join(parent, f".{base}.restore-{me}"),
                                posixpath.join(parent, f".{base}.old-{me}")))
    metas = {id(s): meta for s, (_src, meta) in zip(swaps, jobs, strict=True)}

    def one_host(uri: str, group: list[RemoteSwap]) -> None:
        clear = " ".join(q(p) for s in group for p in (s.new, s.old))
        copies = copy_sh([(posixpath.join(metas[id(s)]["path"], "data"), s.new)
                          for s in group]).replace("exit $fail", "[ $fail = 0 ]")
        run(uri, f"rm -rf -- {clear}\n{copies}\n"
                 f"sync -f {q(group[0].new)} 2>/dev/null || sync", None)

    try:
        _per_host(swaps, one_host)
    except BaseException:
        discard(swaps)
        raise
    return swaps


def discard(swaps: list[RemoteSwap]) -> None:
    """Remove the copies not swapped in and the old trees swapped out (best effort)."""
    def one_host(uri: str, group: list[RemoteSwap]) -> None:
        group[0].run(uri, "rm -rf --one-file-system -- "
                     + " ".join(q(p) for s in group for p in (s.new, s.old)), None)
    try:
        _per_host(swaps, one_host)
    except BackendError:
        pass
