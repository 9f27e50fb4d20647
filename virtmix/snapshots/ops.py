"""`virtmix snapshot`: take, list, restore and remove snapshots of domains, alone or as a site.

Guests use libvirt's snapshots (disks and memory, in their qcow2 files); containers use
copies of their trees (virtmix/snapshots/trees.py). Several domains (a site, or several
names) are taken at one moment: every running member is frozen first (libvirt suspend:
the freezer cgroup for containers, paused vCPUs for guests), then each is snapshotted,
then all are thawed, so no member runs on while another is copied.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtmix.admin.targets import Target
from virtmix.errors import StateError, UsageError, VirtmixError
from virtmix.rootfs.storage import Storage
from virtmix.snapshots import trees

WAS = "virtmix: was "  # guest snapshot descriptions record the state before the freeze


@dataclass
class Taken:
    address: str
    kind: str
    snapshot: str
    seconds: float
    where: str


@dataclass
class Frozen:
    """Which members this command froze (and so must thaw), and their earlier state."""

    states: dict[str, str] = field(default_factory=dict)
    thawed: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from the first freeze to the last thaw


_SITE_STORAGE: dict[str, Storage | None] = {}


def site_storage(inventory: str) -> Storage | None:
    """The storage directory of the inventory at that path, or None if it cannot be read
    (moved or broken: callers fall back to the default storage)."""
    if inventory not in _SITE_STORAGE:
        from pathlib import Path

        from virtmix.inventory.load import load_site

        try:
            st = Storage(load_site(Path(inventory)).inventory.settings.storage_dir)
        except (VirtmixError, OSError):
            st = None
        _SITE_STORAGE[inventory] = st
    return _SITE_STORAGE[inventory]


def storage_for(target: Target, default: Storage) -> Storage:
    """Where snapshots of a tree virtmix did not build live: the storage of the site that
    manages the domain (its metadata names the inventory), else the default."""
    inv = (target.record.metadata or {}).get("inventory")
    return (site_storage(inv) if inv else None) or default


def _is_remote_container(t: Target) -> bool:
    from virtmix.hosts import is_local

    return t.record.kind == "lxc" and not is_local(t.place.uri)


def _root(t: Target) -> str:
    root = trees.root_source(t.record.tree)
    if not root:
        raise UsageError(f"{t.address}: the container has no root <filesystem> (target "
                         "dir='/') to snapshot")
    return str(root)


def _remote_sources(targets: list[Target], storage: Storage) -> dict[str, Any]:
    """The trees of containers on other hosts (asked there, one ssh per host); refused
    for hosts virtmix does not reach over ssh (TLS, TCP: it cannot work on their trees)."""
    from virtmix.hosts import is_ssh_uri
    from virtmix.snapshots import remote

    found: dict[str, Any] = {}
    by_uri: dict[str, list[Target]] = {}
    for t in targets:
        if not is_ssh_uri(t.place.uri):
            raise UsageError(f"{t.address} is a container on {t.place.uri}; virtmix reaches "
                             "another host's container trees over ssh only",
                             hint="use an lxc+ssh:// URI for that host, or run virtmix there")
        by_uri.setdefault(t.place.uri, []).append(t)
    for uri, group in by_uri.items():
        srcs = remote.sources(uri, [_root(t) for t in group],
                              [str(storage_for(t, storage).root) for t in group])
        found.update({t.address: s for t, s in zip(group, srcs, strict=True)})
    return found


@contextlib.contextmanager
def frozen(targets: list[Target]) -> Iterator[Frozen]:
    """Suspend every running member, yield, then resume those this froze (even on error).

    Members are frozen (and thawed) side by side: the first and the last are frozen
    within milliseconds of each other instead of one libvirt call apart per member.
    """
    done = Frozen()
    began = time.monotonic()
    by_address = {t.address: t for t in targets}
    try:
        running = []
        for t in targets:
            done.states[t.address] = t.record.state
            if t.record.state in ("running", "blocked"):
                running.append(t)

        def freeze(t: Target) -> None:
            t.conn.suspend(t.name)
            done.thawed.append(t.address)  # list.append is atomic under the GIL

        _each(freeze, running)
        yield done
    finally:
        def thaw(address: str) -> None:
            with contextlib.suppress(VirtmixError):  # a member gone meanwhile: nothing to do
                by_address[address].conn.resume(by_address[address].name)

        _each(thaw, list(done.thawed))
        done.seconds = time.monotonic() - began
        for address in done.thawed:
            with contextlib.suppress(VirtmixError):
                by_address[address].refresh()


def take(targets: list[Target], snap: str, storage: Storage) -> tuple[list[Taken], float]:
    """Snapshot every target at one moment; returns what was taken and how long the
    members were frozen."""
    from virtmix.snapshots import remote

    trees.check_snapshot_name(snap)
    far = [t for t in targets if _is_remote_container(t)]
    lxc = [t for t in targets if t.record.kind == "lxc" and not _is_remote_container(t)]
    sources = {t.address: trees.tree_source(t.record.tree, storage_for(t, storage))
               for t in lxc}
    for t in lxc:  # refuse before freezing anything
        trees.prune_partial(sources[t.address].storage, t.name)
        trees.ensure_free(sources[t.address].storage, t.name, snap)
    far_sources = _remote_sources(far, storage)
    far_jobs = [remote.Job(far_sources[t.address], t.name, _info(t)) for t in far]
    remote.begin(far_jobs, snap)  # there: a name taken is refused, before any freeze
    taken: list[Taken] = []
    window: list[float] = []

    def copy_frozen(pairs: list[tuple[Path, Path]]) -> None:
        # Everything that must see one moment happens in here: guests' libvirt snapshots
        # and the containers' copies, these side by side (trees.copy_all).
        with frozen(targets) as fz:
            for t in targets:
                if t.record.kind != "lxc":
                    began = time.monotonic()
                    t.conn.create_snapshot(t.name, snap, description=WAS + fz.states[t.address])
                    taken.append(Taken(t.address, t.record.kind, snap,
                                       time.monotonic() - began,
                                       f"libvirt snapshot on {t.place.uri}"))
            began = time.monotonic()
            _side_by_side(lambda: trees.copy_all(pairs), lambda: remote.copy(far_jobs))
            copied.append(time.monotonic() - began)
        window.append(fz.seconds)

    copied: list[float] = []
    jobs = [(sources[t.address], t.name, _info(t)) for t in lxc]
    try:
        paths = trees.take_many(jobs, snap, copy=copy_frozen)
        remote.commit(far_jobs, snap, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    except BaseException:
        remote.abandon(far_jobs)
        raise
    for t, path in zip(lxc, paths, strict=True):
        taken.append(Taken(t.address, "lxc", snap, copied[0] if copied else 0.0, str(path)))
    for t, job in zip(far, far_jobs, strict=True):
        taken.append(Taken(t.address, "lxc", snap, copied[0] if copied else 0.0,
                           f"{job.final} on {t.place.uri}"))
    order = {t.address: i for i, t in enumerate(targets)}
    taken.sort(key=lambda x: order[x.address])
    return taken, window[0] if window else 0.0


def _info(t: Target) -> dict[str, Any]:
    """What a container's snapshot records: the state it had before the freeze (the state
    a restore brings back) and its definition."""
    return {"state": t.record.state, "uuid": t.record.uuid, "uri": t.place.uri,
            "xml": t.record.xml}


def _side_by_side(*fns: Any) -> None:
    """Run each fn at once (this machine's copies and other hosts' scripts overlap);
    the first error once all have ended."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(fn) for fn in fns]
    for f in futures:
        f.result()


def listing(targets: list[Target], storage: Storage) -> list[dict[str, Any]]:
    from virtmix.hosts import is_ssh_uri
    from virtmix.snapshots import remote

    far = _remote_sources([t for t in targets if _is_remote_container(t)
                           and is_ssh_uri(t.place.uri)], storage)
    far_targets = [t for t in targets if t.address in far]
    far_lists = dict(zip([t.address for t in far_targets],
                         remote.list_many([(far[t.address], t.name) for t in far_targets]),
                         strict=True))
    rows = []
    for t in targets:
        if t.record.kind == "lxc":
            if _is_remote_container(t):
                if t.address not in far:
                    continue  # a host not reached over ssh: its trees are out of reach
                for m in far_lists[t.address]:
                    rows.append({"domain": t.address, "kind": "lxc", "snapshot": m["name"],
                                 "created": m.get("created", ""), "state": m.get("state", ""),
                                 "copy": m.get("method", ""),
                                 "path": f"{m['path']} on {t.place.uri}"})
                continue
            src = trees.tree_source(t.record.tree, storage_for(t, storage))
            for m in trees.list_for(src.storage, t.name):
                rows.append({"domain": t.address, "kind": "lxc", "snapshot": m["name"],
                             "created": m.get("created", ""), "state": m.get("state", ""),
                             "copy": m.get("method", ""), "path": m["path"]})
        else:
            for s in t.conn.list_snapshots(t.name):
                state = s.description[len(WAS):] if s.description.startswith(WAS) else s.state
                rows.append({"domain": t.address, "kind": "kvm", "snapshot": s.name,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                      time.localtime(s.created)),
                             "state": state, "copy": "libvirt", "path": ""})
    return rows


def restore(targets: list[Target], snap: str, storage: Storage) -> list[str]:
    """Put every target back to the snapshot, in the state it was taken in."""
    from virtmix.snapshots import remote

    far = _remote_sources([t for t in targets if _is_remote_container(t)], storage)
    metas: dict[str, dict[str, Any]] = {}
    there = [t for t in targets if t.address in far]  # one script per host
    metas.update(zip([t.address for t in there],
                     remote.find_many([(far[t.address], t.name) for t in there], snap),
                     strict=True))
    for t in targets:  # every member must have it before anything is touched
        if t.address in far:
            continue
        elif t.record.kind == "lxc":
            src = trees.tree_source(t.record.tree, storage_for(t, storage))
            metas[t.address] = trees.find(src.storage, t.name, snap)
        else:
            if snap not in {s.name for s in t.conn.list_snapshots(t.name)}:
                from virtmix.errors import NotFoundError

                raise NotFoundError(f"{t.address} has no snapshot named {snap!r}",
                                    hint=f"see `virtmix snapshot ls {t.address}`")
    containers = [t for t in targets if t.record.kind == "lxc"]
    if containers:
        _restore_containers(containers, metas, storage, far)
    for t in targets:
        if t.record.kind != "lxc":
            _restore_guest(t, snap)
    return [t.address for t in targets]


def _each(fn: Any, targets: list[Any], jobs: int = 8) -> None:
    """fn(t) for every target, side by side (libvirt calls wait on the daemon, not on
    this process; one connection carries them all); the first error once all are done."""
    from concurrent.futures import ThreadPoolExecutor

    if len(targets) < 2:
        for t in targets:
            fn(t)
        return
    with ThreadPoolExecutor(max_workers=min(jobs, len(targets))) as pool:
        futures = [pool.submit(fn, t) for t in targets]
    for f in futures:
        f.result()


def kill(t: Target) -> None:
    """Stop a container whose state is being thrown away, at once: the backend's destroy
    sends SIGKILL to its init first (libvirt's own destroy SIGTERMs and waits ~1.8 s for a
    systemd init); a frozen one cannot take a signal and is torn down by libvirt."""
    try:
        t.conn.destroy(t.name)
    except VirtmixError:
        if t.refresh().record.active:  # not "it had already stopped"
            raise
    t.refresh()


def _restore_containers(targets: list[Target], metas: dict[str, dict[str, Any]],
                        storage: Storage, far: dict[str, Any]) -> None:
    """Copy every snapshot beside its tree while the containers still run; then stop them
    all, swap each copy in, and start each in the state it was taken in (each step side by
    side). Each container is off only for the kill, the renames and its start.

    Steps, not one pipeline per container (kill, swap, start each): for 20 Debian
    containers the pipelines took 4.0 s here, the steps 2.4 s (libvirtd runs kills and
    starts side by side worse than a batch of either).
    """
    from virtmix.snapshots import remote

    clock = {"began": time.monotonic()}
    here = [t for t in targets if t.address not in far]
    there = [t for t in targets if t.address in far]
    made: dict[str, list[Any]] = {}

    def prepare_here() -> None:
        made["here"] = trees.prepare_many(
            [(trees.tree_source(t.record.tree, storage_for(t, storage)), metas[t.address])
             for t in here])

    def prepare_there() -> None:
        made["there"] = remote.prepare_many([(far[t.address], metas[t.address])
                                             for t in there])

    try:
        _side_by_side(prepare_here, prepare_there)
    except BaseException:
        trees.discard(made.get("here", []))
        remote.discard(made.get("there", []))
        raise
    by_address: dict[str, Any] = {
        **{t.address: s for t, s in zip(here, made["here"], strict=True)},
        **{t.address: s for t, s in zip(there, made["there"], strict=True)}}
    clock["copied"] = time.monotonic()

    def swap_in(t: Target) -> None:
        if t.address not in far:  # far hosts' swaps: one script per host, before
            by_address[t.address].swap_in()
        meta = metas[t.address]
        if meta.get("xml") and meta["xml"] != t.record.xml:
            t.conn.define(meta["xml"])  # the definition it had, as snapshot-revert does

    def bring_back(t: Target) -> None:
        state = metas[t.address].get("state", "shutoff")
        if state in ("running", "blocked", "paused"):
            _start(t)
            if state == "paused":
                t.conn.suspend(t.name)
        t.refresh()
        if state in ("running", "blocked") and t.record.state not in ("running", "blocked"):
            raise StateError(f"snapshot restore: {t.address} did not stay up after restore "
                             f"(state {t.record.state})")

    try:
        _each(kill, [t for t in targets if t.record.active])
        clock["killed"] = time.monotonic()
        remote.swap_all(made["there"])
        _each(swap_in, targets, jobs=4)
        clock["swapped"] = time.monotonic()
        _each(bring_back, targets)
        clock["started"] = time.monotonic()
    finally:
        trees.discard(made["here"])
        remote.discard(made["there"])
    if os.environ.get("VIRTMIX_TIMING"):
        steps = list(clock.items())
        pairs = zip(steps, steps[1:], strict=False)
        print("virtmix: timing: " + ", ".join(f"{name} +{t1 - t0:.2f}s"
                                              for (_n, t0), (name, t1) in pairs),
              file=sys.stderr)


def _start(t: Target) -> None:
    """Start a container, once more if the first start failed and left it off: on hosts
    without cgroup namespaces a start side by side with another container's systemd can
    lose its cgroup ("Unable to write to .../tasks"); a second start finds it there."""
    try:
        t.conn.start(t.name)
    except VirtmixError:
        if t.refresh().record.active:
            raise
        time.sleep(0.2)
        t.conn.start(t.name)


def _restore_guest(t: Target, snap: str) -> None:
    t.conn.revert_snapshot(t.name, snap)
    desc = next((s.description for s in t.conn.list_snapshots(t.name) if s.name == snap), "")
    t.refresh()
    if desc.startswith(WAS) and desc[len(WAS):] in ("running", "blocked") \
            and t.record.state == "paused":
        t.conn.resume(t.name)  # taken frozen with its site: it was running before
        t.refresh()


def remove(targets: list[Target], snap: str, storage: Storage) -> list[str]:
    from virtmix.snapshots import remote

    far = _remote_sources([t for t in targets if _is_remote_container(t)], storage)
    done = []
    for t in targets:
        if t.address in far:
            remote.remove(far[t.address], t.name, snap)
        elif t.record.kind == "lxc":
            src = trees.tree_source(t.record.tree, storage_for(t, storage))
            trees.remove(src.storage, t.name, snap)
        else:
            t.conn.delete_snapshot(t.name, snap)
        done.append(t.address)
    return done
