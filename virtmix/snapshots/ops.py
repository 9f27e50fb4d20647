"""`virtmix snapshot`: take, list, restore and remove snapshots of domains, alone or as a site.

Guests use libvirt's snapshots (disks and memory, in their qcow2 files); containers use
copies of their trees (virtmix/snapshots/trees.py). Several domains (a site, or several
names) are taken at one moment: every running member is frozen first (libvirt suspend:
the freezer cgroup for containers, paused vCPUs for guests), then each is snapshotted,
then all are thawed, so no member runs on while another is copied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def _local_only(target: Target, verb: str) -> None:
    from virtmix.hosts import is_local

    if target.record.kind == "lxc" and not is_local(target.place.uri):
        raise UsageError(f"{verb}: {target.address} is a container on {target.place.uri}; "
                         "container snapshots work on containers of this host only")


@contextlib.contextmanager
def frozen(targets: list[Target]) -> Iterator[Frozen]:
    """Suspend every running member, yield, then resume those this froze (even on error)."""
    done = Frozen()
    try:
        for t in targets:
            done.states[t.address] = t.record.state
            if t.record.state in ("running", "blocked"):
                t.conn.suspend(t.name)
                done.thawed.append(t.address)
        yield done
    finally:
        by_address = {t.address: t for t in targets}
        for address in done.thawed:
            t = by_address[address]
            with contextlib.suppress(VirtmixError):  # a member gone meanwhile: nothing to thaw
                t.conn.resume(t.name)
                t.refresh()


def take(targets: list[Target], snap: str, storage: Storage) -> list[Taken]:
    """Snapshot every target at one moment; returns what was taken."""
    trees.check_snapshot_name(snap)
    for t in targets:
        _local_only(t, "snapshot")
    sources = {t.address: trees.tree_source(t.record.tree, storage_for(t, storage))
               for t in targets if t.record.kind == "lxc"}
    for t in targets:  # refuse before freezing anything
        if t.record.kind == "lxc":
            trees.prune_partial(sources[t.address].storage, t.name)
            trees.ensure_free(sources[t.address].storage, t.name, snap)
    taken = []
    with frozen(targets) as fz:
        for t in targets:
            began = time.monotonic()
            before = fz.states[t.address]
            if t.record.kind == "lxc":
                path = trees.take(sources[t.address], t.name, snap,
                                  {"state": before, "uuid": t.record.uuid,
                                   "uri": t.place.uri, "xml": t.record.xml})
                where = str(path)
            else:
                t.conn.create_snapshot(t.name, snap, description=WAS + before)
                where = f"libvirt snapshot on {t.place.uri}"
            taken.append(Taken(t.address, t.record.kind, snap, time.monotonic() - began, where))
    return taken


def listing(targets: list[Target], storage: Storage) -> list[dict[str, Any]]:
    rows = []
    for t in targets:
        if t.record.kind == "lxc":
            if _is_remote_container(t):
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


def _is_remote_container(t: Target) -> bool:
    from virtmix.hosts import is_local

    return t.record.kind == "lxc" and not is_local(t.place.uri)


def restore(targets: list[Target], snap: str, storage: Storage) -> list[str]:
    """Put every target back to the snapshot, in the state it was taken in."""
    for t in targets:
        _local_only(t, "snapshot restore")
    metas: dict[str, dict[str, Any]] = {}
    for t in targets:  # every member must have it before anything is touched
        if t.record.kind == "lxc":
            src = trees.tree_source(t.record.tree, storage_for(t, storage))
            metas[t.address] = trees.find(src.storage, t.name, snap)
        else:
            if snap not in {s.name for s in t.conn.list_snapshots(t.name)}:
                from virtmix.errors import NotFoundError

                raise NotFoundError(f"{t.address} has no snapshot named {snap!r}",
                                    hint=f"see `virtmix snapshot ls {t.address}`")
    done = []
    for t in targets:
        if t.record.kind == "lxc":
            _restore_container(t, metas[t.address], storage)
        else:
            _restore_guest(t, snap)
        done.append(t.address)
    return done


def _restore_container(t: Target, meta: dict[str, Any], storage: Storage) -> None:
    if t.record.active:
        t.conn.destroy(t.name)  # its current state is being thrown away: no shutdown
        t.refresh()
    src = trees.tree_source(t.record.tree, storage_for(t, storage))
    trees.put_back(src, meta)
    if meta.get("xml") and meta["xml"] != t.record.xml:
        t.conn.define(meta["xml"])  # the definition it had, as snapshot-revert does
    state = meta.get("state", "shutoff")
    if state in ("running", "blocked", "paused"):
        t.conn.start(t.name)
        if state == "paused":
            t.conn.suspend(t.name)
    t.refresh()
    if state in ("running", "blocked") and t.record.state not in ("running", "blocked"):
        raise StateError(f"snapshot restore: {t.address} did not stay up after restore "
                         f"(state {t.record.state})")


def _restore_guest(t: Target, snap: str) -> None:
    t.conn.revert_snapshot(t.name, snap)
    desc = next((s.description for s in t.conn.list_snapshots(t.name) if s.name == snap), "")
    t.refresh()
    if desc.startswith(WAS) and desc[len(WAS):] in ("running", "blocked") \
            and t.record.state == "paused":
        t.conn.resume(t.name)  # taken frozen with its site: it was running before
        t.refresh()


def remove(targets: list[Target], snap: str, storage: Storage) -> list[str]:
    done = []
    for t in targets:
        _local_only(t, "snapshot rm")
        if t.record.kind == "lxc":
            src = trees.tree_source(t.record.tree, storage_for(t, storage))
            trees.remove(src.storage, t.name, snap)
        else:
            t.conn.delete_snapshot(t.name, snap)
        done.append(t.address)
    return done
