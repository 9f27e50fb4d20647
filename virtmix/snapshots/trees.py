"""Container snapshots: copies of a container's tree, taken while it is frozen.

libvirt's LXC driver has no snapshot API, so a container's snapshot is its tree:
  - a clone virtmix built as an overlay: only the upper layer (the container's own changes;
    the lower is a cached base that never changes while a clone uses it), so a snapshot of
    a running Debian container is a few MiB;
  - any other tree (reflink or copy clones, a `rootfs: {path}` the admin gave): the whole
    tree, reflinked where the filesystem can.

    STORAGE/snapshots/NAME/SNAP/{snapshot.json, data/, .virtmix-snapshot}
    STORAGE/snapshots/NAME/.SNAP.part-PID/   a snapshot being taken (never listed)

A snapshot is complete iff its directory exists: it is built under a hidden name, synced,
then renamed. The domain's definition at that moment is kept in snapshot.json and comes
back with a restore, as libvirt's snapshot-revert does for guests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtmix.errors import ConflictError, NotFoundError, RootfsError, UsageError
from virtmix.rootfs.snapshot_dirs import MARKER, META, SNAPSHOTS_DIR
from virtmix.rootfs.storage import Storage, remove_tree
from virtmix.util.files import fsync_dir
from virtmix.util.layout import CONTAINERS_DIR, TREE_DIR

__all__ = ["MARKER", "META", "SNAPSHOTS_DIR"]  # the layout is rootfs.snapshot_dirs'
_SNAP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_snapshot_name(snap: str) -> str:
    if not _SNAP_RE.match(snap) or ".." in snap:
        raise UsageError(f"snapshot name {snap!r}: expected letters, digits and _.+- "
                         "(at most 64, starting with a letter or digit)")
    return snap


def default_snapshot_name() -> str:
    return time.strftime("snap-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class TreeSource:
    """Where a container's tree is and how much of it a snapshot copies."""

    storage: Storage
    tree: Path              # the container's root as libvirt sees it
    copy_from: Path         # the upper dir (overlay clone) or the tree itself
    method: str             # "upper" or "tree"
    cache_entry: str | None = None
    container_dir: Path | None = None  # virtmix-built trees only


def root_source(xml_tree: Any) -> str | None:
    """The host directory mounted at / of a container definition."""
    for fs in xml_tree.iterfind("devices/filesystem"):
        target = fs.find("target")
        source = fs.find("source")
        if target is not None and target.get("dir") == "/" and source is not None:
            return source.get("dir")
    return None


def tree_source(xml_tree: Any, default_storage: Storage) -> TreeSource:
    root = root_source(xml_tree)
    if not root:
        raise UsageError("the container has no root <filesystem> (target dir='/') to snapshot")
    tree = Path(root)
    cdir = tree.parent
    from virtmix.rootfs.storage import CONTAINER_MARKER

    if (tree.name == TREE_DIR and cdir.parent.name == CONTAINERS_DIR
            and (cdir / CONTAINER_MARKER).is_file()):
        storage = Storage(cdir.parent.parent)
        state = storage.read_state(cdir.name) or {}
        if state.get("method") == "overlay":
            return TreeSource(storage, tree, cdir / "upper", "upper",
                              state.get("cache_entry"), cdir)
        return TreeSource(storage, tree, tree, "tree", None, cdir)
    if not tree.is_dir():
        raise NotFoundError(f"the container's tree {tree} does not exist")
    return TreeSource(default_storage, tree, tree, "tree")


def snapshot_root(storage: Storage, name: str) -> Path:
    return storage.root / SNAPSHOTS_DIR / name


def _sync(path: Path) -> None:
    """Flush the filesystem holding path: a snapshot is renamed into place only once durable."""
    subprocess.run(["sync", "-f", str(path)], check=False)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_free(storage: Storage, name: str, snap: str) -> Path:
    """Where snapshot `snap` of `name` goes; ConflictError when it already exists."""
    final = snapshot_root(storage, name) / check_snapshot_name(snap)
    if os.path.lexists(final):
        raise ConflictError(f"{name} already has a snapshot named {snap!r} ({final})",
                            hint="choose another --name, or remove it with "
                                 f"`virtmix snapshot rm {name} {snap}`")
    return final


def take(src: TreeSource, name: str, snap: str, info: dict[str, Any]) -> Path:
    """Copy the tree (the caller has frozen or stopped the container) into a new snapshot."""
    return take_many([(src, name, info)], snap)[0]


class _Copy:
    """One `cp -a` running (several run at once: a site's copies overlap their I/O waits)."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.proc = subprocess.Popen(["cp", "-a", "--reflink=auto", "--", str(src), str(dst)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)

    def wait(self) -> None:
        _out, errout = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RootfsError(f"copying {self.src} to {self.dst} failed: "
                              f"{errout.strip()[-400:]}")


def copy_all(pairs: list[tuple[Path, Path]], jobs: int = 8) -> None:
    """cp -a each (src, dst), up to `jobs` at once; the first failure is raised once all
    started copies have ended (none is left running)."""
    failure: RootfsError | None = None
    for i in range(0, len(pairs), jobs):
        running = [_Copy(a, b) for a, b in pairs[i:i + jobs]]
        for c in running:
            try:
                c.wait()
            except RootfsError as exc:
                failure = failure or exc
        if failure:
            raise failure


def begin(src: TreeSource, name: str, snap: str) -> tuple[Path, Path]:
    """The hidden directory a snapshot is built in, and its final name (ConflictError if
    the name is taken). Done before the freeze: the frozen window holds only the copy."""
    final = ensure_free(src.storage, name, snap)
    parent = final.parent
    # Snapshots hold whole trees (shadow files, keys): root alone may read them.
    parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent.mkdir(mode=0o700, exist_ok=True)
    part = parent / f".{snap}.part-{os.getpid()}"
    if os.path.lexists(part):
        shutil.rmtree(part)
    part.mkdir(mode=0o700)
    (part / MARKER).write_text("")
    return part, final


def take_many(jobs: list[tuple[TreeSource, str, dict[str, Any]]], snap: str,
              copy: Any = None) -> list[Path]:
    """Snapshot several trees: copy all (`copy(pairs)`: the caller freezes around it, by
    default copy_all), then record, sync once and rename each into place.

    One filesystem sync for all (not one per member) keeps a site's snapshot short; each
    is still renamed into place only after its data and record are on disk.
    """
    parts: list[tuple[Path, Path]] = []
    try:
        for src, name, _info in jobs:
            parts.append(begin(src, name, snap))
        (copy or copy_all)([(src.copy_from, part / "data")
                            for (src, _n, _i), (part, _f) in zip(jobs, parts, strict=True)])
        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for (src, name, info), (part, _final) in zip(jobs, parts, strict=True):
            _write_json(part / META, {
                **info, "name": snap, "domain": name, "method": src.method,
                "cache_entry": src.cache_entry, "tree": str(src.tree), "created": created,
            })
        synced: set[int] = set()
        for part, _final in parts:  # one syncfs per filesystem, not one per member
            dev = part.stat().st_dev
            if dev not in synced:
                _sync(part)
                synced.add(dev)
        for part, final in parts:
            os.rename(part, final)
    except BaseException:
        for part, _final in parts:
            shutil.rmtree(part, ignore_errors=True)
        raise
    for parent in {final.parent for _p, final in parts}:
        fsync_dir(parent)
    return [final for _p, final in parts]


def prune_partial(storage: Storage, name: str) -> None:
    """Remove snapshots a killed virtmix left half-taken (hidden .SNAP.part-PID dirs)."""
    parent = snapshot_root(storage, name)
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(".") and ".part-" in p.name and not p.is_symlink():
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(p, ignore_errors=True)


def list_for(storage: Storage, name: str) -> list[dict[str, Any]]:
    parent = snapshot_root(storage, name)
    if not parent.is_dir():
        return []
    out = []
    for p in sorted(parent.iterdir()):
        if p.name.startswith(".") or p.is_symlink():
            continue
        try:
            meta = json.loads((p / META).read_text())
        except (OSError, ValueError):
            continue  # not a complete snapshot
        out.append(meta | {"path": str(p)})
    return sorted(out, key=lambda m: (m.get("created", ""), m["name"]))


def find(storage: Storage, name: str, snap: str) -> dict[str, Any]:
    check_snapshot_name(snap)
    for meta in list_for(storage, name):
        if meta["name"] == snap:
            return meta
    have = ", ".join(m["name"] for m in list_for(storage, name)) or "none"
    raise NotFoundError(f"{name} has no snapshot named {snap!r} (snapshots: {have})",
                        hint=f"see `virtmix snapshot ls {name}`")


def remove(storage: Storage, name: str, snap: str) -> None:
    meta = find(storage, name, snap)
    parent = snapshot_root(storage, name)
    remove_tree(storage, Path(meta["path"]), parent, MARKER)


def put_back(src: TreeSource, meta: dict[str, Any]) -> None:
    """Replace the container's tree (or upper layer) by the snapshot's copy (shut off)."""
    put_back_many([(src, meta)])


def _check_fits(src: TreeSource, meta: dict[str, Any]) -> None:
    if meta["method"] != src.method:
        raise ConflictError(f"snapshot {meta['name']} holds a {meta['method']} copy but the "
                            f"container's tree is now a {src.method} clone; cannot restore it")
    if src.method == "upper" and meta.get("cache_entry") != src.cache_entry:
        raise ConflictError(f"snapshot {meta['name']} was taken on base "
                            f"{meta.get('cache_entry')}, the container now uses "
                            f"{src.cache_entry}")


@dataclass
class Swap:
    """One container's restore in three steps: the snapshot's copy made beside its tree
    (while it still runs), swapped in by rename (while it is off), the old one removed."""

    src: TreeSource
    dest: Path   # the upper layer (overlay clone) or the whole tree
    new: Path    # the copy of the snapshot, hidden until swapped in
    old: Path    # where the replaced one goes until it is removed

    def swap_in(self) -> None:
        """The container must be shut off: unmount its overlay, rename, mount again."""
        from virtmix.rootfs.clone import mount_overlay, overlay_mounted_here, unmount_overlay

        cdir = self.src.container_dir
        if self.src.method == "upper":
            assert cdir is not None
            if overlay_mounted_here(self.src.tree, cdir / "upper"):
                unmount_overlay(self.src.tree, cdir / "upper")
        os.rename(self.dest, self.old)
        os.rename(self.new, self.dest)
        if self.src.method == "upper":
            assert cdir is not None
            work = cdir / "work"
            if work.is_dir() and not work.is_symlink():  # overlayfs needs an empty one
                os.rename(work, self.old.with_name(self.old.name + "-work"))
            work.mkdir(mode=0o755, exist_ok=True)
            lower = self.src.storage.cache_entry(str(self.src.cache_entry)) / "tree"
            mount_overlay(lower, cdir / "upper", work, self.src.tree)


def prepare_many(jobs: list[tuple[TreeSource, dict[str, Any]]]) -> list[Swap]:
    """Copy each snapshot beside the tree it replaces (side by side, one filesystem sync).

    Nothing the containers use is touched: this runs while they still run, so only the
    renames of swap_in fall in the time they are off. A failure removes every copy."""
    for src, meta in jobs:
        _check_fits(src, meta)
    pid = os.getpid()
    swaps = []
    for src, _meta in jobs:
        dest = src.container_dir / "upper" if src.method == "upper" and src.container_dir \
            else src.tree
        swap = Swap(src, dest, dest.with_name(f".{dest.name}.restore-{pid}"),
                    dest.with_name(f".{dest.name}.old-{pid}"))
        _remove_all([p for p in (swap.new, swap.old, swap.old.with_name(swap.old.name + "-work"))
                     if os.path.lexists(p)])
        swaps.append(swap)
    try:
        copy_all([(Path(meta["path"]) / "data", swap.new)
                  for (_src, meta), swap in zip(jobs, swaps, strict=True)])
        synced: set[int] = set()
        for swap in swaps:
            if (dev := swap.new.stat().st_dev) not in synced:
                _sync(swap.new)
                synced.add(dev)
    except BaseException:
        discard(swaps)
        raise
    return swaps


def discard(swaps: list[Swap]) -> None:
    """Remove what prepare_many made and swap_in left: the copies not swapped in, the old
    trees swapped out."""
    _remove_all([p for s in swaps
                 for p in (s.new, s.old, s.old.with_name(s.old.name + "-work"))
                 if os.path.lexists(p)])


def put_back_many(jobs: list[tuple[TreeSource, dict[str, Any]]]) -> None:
    """Replace each (shut off) container's tree or upper layer by its snapshot's copy."""
    swaps = prepare_many(jobs)
    try:
        for swap in swaps:
            swap.swap_in()
    finally:
        discard(swaps)


def _remove_all(paths: list[Path]) -> None:
    """rm -rf the old trees side by side (rm walks a tree faster than a Python loop)."""
    procs = [subprocess.Popen(["rm", "-rf", "--one-file-system", "--", str(p)])
             for p in paths]
    for proc in procs:
        proc.wait()
