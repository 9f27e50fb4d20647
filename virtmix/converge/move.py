"""Move a container from one libvirt host to another, keeping it on exactly one of them.

libvirt cannot migrate LXC domains, so virtmix does what an admin would, in an order that
leaves the container running (or restartable) on exactly one host whatever step fails:

1. copy its tree to the target while it runs (most of the bytes; hosts/sync.py, rsync);
2. freeze it (the freezer cgroup: libvirt suspend; if that fails, stop it) and copy again
   (only the changes);
3. define it on the target with its UUID and MAC addresses (the rest of the definition as
   rendered for the target), start it, and see it running there;
4. only then destroy and undefine it on the source and delete its tree there.

A failure in 2-3 destroys and undefines what was made on the target, deletes the copied
tree there, and thaws the source: it runs on as before. A crash (virtmix killed) leaves
either the source running or frozen (`resume` thaws it; `move` again finishes the job: a
target copy with the source's UUID is recognised), or the target running with the source
frozen (`move` again removes the source). The downtime is freeze -> running on the target.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from virtmix.backend import Backend
from virtmix.backend.records import DomainRecord
from virtmix.converge.observe import owned_fields
from virtmix.converge.plan_xml import adapt_domain_xml
from virtmix.domain import idmap as idmap_reader
from virtmix.errors import ConflictError, StateError, UsageError, VirtmixError
from virtmix.hosts.sync import sync_tree
from virtmix.util.faults import fault_point
from virtmix.util.polling import poll
from virtmix.util.uris import is_local

SETTLE = 1.0       # seconds the target must stay running before the source is removed
START_WAIT = 15.0  # seconds for the target's state to say running after start
RUNNING = ("running", "blocked")


@dataclass
class TreeHooks:
    """What is specific to where the trees live (virtmix's storage here, a guest's there).

    prepare(path): make the target's tree directory (its parent with virtmix's marker);
    seal(path): once it runs there, make the target tree virtmix's (markers, state);
    drop_target(path): delete the copied tree on the target (rollback);
    drop_source(path): delete the tree on the source once the move is committed.
    Each defaults to nothing (a given tree is never deleted).
    """

    prepare: Callable[[str], None] = lambda _p: None
    seal: Callable[[str], None] = lambda _p: None
    drop_target: Callable[[str], None] = lambda _p: None
    drop_source: Callable[[str], None] = lambda _p: None


@dataclass
class Moved:
    name: str
    source: str
    target: str
    state: str                 # the state it has on the target
    downtime: float = 0.0      # freeze -> running on the target (0 for a stopped one)
    live_copy: float = 0.0     # the copy while it ran
    frozen_copy: float = 0.0   # the copy while frozen
    total: float = 0.0
    notes: list[str] = field(default_factory=list)


def tree_of(xml: str) -> str:
    """The source dir of a container definition's root filesystem (<filesystem> on /)."""
    root = etree.fromstring(xml.encode())
    for fs in root.iterfind("devices/filesystem"):
        target, source = fs.find("target"), fs.find("source")
        if target is not None and target.get("dir") == "/" and source is not None:
            found = source.get("dir")
            if found:
                return str(found)
    raise UsageError("the container's definition has no root filesystem (<filesystem> on /)")


def target_definition(rendered: str, rec: DomainRecord) -> str:
    """The definition rendered for the target, with the source's UUID and MACs, refused if
    its id map differs (the copied tree is owned by the source's range)."""
    have = idmap_reader.read(etree.fromstring(rec.xml.encode()))
    want = idmap_reader.read(etree.fromstring(rendered.encode()))
    if have != want:
        raise UsageError(
            f"moving {rec.name}: its id map on {rec.uri} ({have}) differs from the one "
            f"rendered for the target ({want}); the copied tree is owned by the first",
            hint="give the entry an explicit `idmap: {uid: N}` (the source's) and retry")
    ifaces = owned_fields(rec.xml).get("interfaces", ())
    return adapt_domain_xml(rendered, rec.uuid, ifaces, set())


def _running(conn: Backend, name: str) -> bool:
    try:
        return conn.state(name) in RUNNING
    except VirtmixError:
        return False


def _existing_target(src: Backend, dst: Backend, rec: DomainRecord,
                     hooks: TreeHooks) -> Moved | None:
    """A copy already on the target: another domain (refused), a leftover of an
    interrupted move (removed), or a committed one whose source was not yet removed."""
    try:
        there = dst.get(rec.name)
    except VirtmixError:
        return None
    if there.uuid != rec.uuid:
        raise ConflictError(f"{rec.name} already exists on {dst.uri} (another UUID); "
                            "not moving onto it")
    if there.active:  # the move was committed: finish it
        _remove_source(src, rec.name, tree_of(rec.xml), hooks)
        return Moved(rec.name, src.uri, dst.uri, there.state,
                     notes=[f"finished an interrupted move: removed it from {src.uri}"])
    dst.undefine(rec.name)  # an interrupted move's definition: start again
    return None


def _remove_source(src: Backend, name: str, tree: str, hooks: TreeHooks) -> None:
    if src.state(name) != "shutoff":
        try:
            src.destroy(name)
        except VirtmixError:
            # A frozen container whose tasks do not die while frozen: thaw, then kill.
            src.resume(name)
            src.destroy(name)
    fault_point("move-source-destroyed")
    src.undefine(name)
    hooks.drop_source(tree)


def _rollback(src: Backend, dst: Backend, name: str, dst_tree: str, hooks: TreeHooks,
              froze: bool) -> None:
    """Undo the target side and thaw the source; each step even when another failed."""
    with contextlib.suppress(VirtmixError):
        if dst.state(name) != "shutoff":
            dst.destroy(name)
    with contextlib.suppress(VirtmixError):
        dst.undefine(name)
    with contextlib.suppress(VirtmixError, OSError):
        hooks.drop_target(dst_tree)
    if froze:
        src.resume(name)  # not suppressed: a source left frozen must be said


def move_container(src: Backend, dst: Backend, name: str, rendered: str,
                   hooks: TreeHooks | None = None,
                   progress: Callable[[str], None] | None = None) -> Moved:
    """Move container `name` from src to dst; `rendered` is its definition for dst."""
    hooks = hooks or TreeHooks()
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    rec = src.get(name)
    if rec.kind != "lxc":
        raise UsageError(f"{name} on {src.uri} is a guest: guests move by migration")
    done = _existing_target(src, dst, rec, hooks)
    if done is not None:
        return done
    xml = target_definition(rendered, rec)
    src_tree, dst_tree = tree_of(rec.xml), tree_of(xml)
    was = rec.state
    if was == "paused":
        raise StateError(f"{name} is frozen on {src.uri}; unfreeze it (or stop it) first, "
                         "or finish a move that was interrupted: `virtmix resume` it, then "
                         "move again")
    moved = Moved(name, src.uri, dst.uri, "shutoff")
    # Two connections of this machine naming one tree (a given tree, both daemons here):
    # nothing to copy.
    same = src_tree == dst_tree and is_local(src.uri) and is_local(dst.uri)

    def copy() -> float:
        return 0.0 if same else sync_tree(src.uri, src_tree, dst.uri, dst_tree)

    if not same:
        hooks.prepare(dst_tree)
    say(f"copying {src_tree} to {dst.uri} while {name} runs")
    moved.live_copy = copy()
    fault_point("move-copied-live")
    froze = stopped = False
    try:
        t_freeze = time.monotonic()
        if was in RUNNING:
            try:
                src.suspend(name)
                froze = True
            except VirtmixError as exc:
                # Seen in a guest (cgroup v2): libvirt's freeze of a systemd container timed
                # out ("Suspend operation failed"). Stopped, it is as consistent.
                moved.notes.append(f"freezing it failed ({exc.message}); stopped it instead")
                with contextlib.suppress(VirtmixError):
                    src.resume(name)
                src.destroy(name)
                stopped = True
        fault_point("move-frozen")
        moved.frozen_copy = copy()
        dst.define(xml)
        fault_point("move-defined")
        if froze or stopped:
            dst.start(name)
            if not poll(lambda: True if _running(dst, name) else None, timeout=START_WAIT,
                        interval=0.02):
                raise StateError(f"{name} did not reach running on {dst.uri} "
                                 f"(state {dst.state(name)})")
            moved.downtime = time.monotonic() - t_freeze
            time.sleep(SETTLE)
            if not _running(dst, name):
                raise StateError(f"{name} started on {dst.uri} but did not stay up "
                                 f"(state {dst.state(name)})")
            moved.state = "running"
        if not same:  # the markers (a manifest digest in a guest): after, not in, the downtime
            hooks.seal(dst_tree)
    except BaseException:
        _rollback(src, dst, name, dst_tree, TreeHooks() if same else hooks, froze)
        if stopped:
            src.start(name)  # it ran before the move: it runs again where it was
        raise
    fault_point("move-committed")
    _remove_source(src, name, src_tree, TreeHooks() if same else hooks)
    moved.total = time.monotonic() - t0
    return moved
