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

A target with another id range for it: the live copy is shifted there while the container
still runs; the frozen pass then maps owners as rsync writes them (--usermap/--groupmap,
one id at a time: the ids the shift met and a floor of common ones) and lists what it
changed, and only those entries are shifted inside the downtime (ACLs, a v3 capability's
root, an id no map named). Every step only moves ids of the source range to the target's,
and the ranges never overlap, so a rerun after a kill anywhere redoes it exactly.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lxml import etree

from virtmix.backend import Backend
from virtmix.backend.records import DomainRecord
from virtmix.converge.observe import owned_fields
from virtmix.converge.plan_xml import adapt_domain_xml
from virtmix.domain import idmap as idmap_reader
from virtmix.errors import (
    BackendError,
    ConflictError,
    NotFoundError,
    StateError,
    UsageError,
    VirtmixError,
)
from virtmix.hosts.sync import sync_tree, sync_tree_listed
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
    shift: float = 0.0         # shifting the copy's owners to the target's id range
    shift_frozen: float = 0.0  # the part of shift inside the downtime
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
    """The definition rendered for the target, with the source's UUID and MACs (its id map
    may differ: the copied tree is then shifted, see id_shift)."""
    ifaces = owned_fields(rec.xml).get("interfaces", ())
    return adapt_domain_xml(rendered, rec.uuid, ifaces, set())


@dataclass(frozen=True)
class Shift:
    """The ownership shift a copied tree needs: (uid, gid) host starts of the source's and
    the target's ranges ((0, 0): privileged), `count` ids."""

    source: tuple[int, int]
    to: tuple[int, int]
    count: int


def _range(xml: str) -> tuple[tuple[int, int], int | None]:
    root = etree.fromstring(xml.encode())
    uid = idmap_reader.read(root)
    if uid is None:
        return (0, 0), None
    gid = idmap_reader.gid_target(root)
    return (uid[1], uid[1] if gid is None else gid), uid[2]


def id_shift(name: str, src_xml: str, dst_xml: str) -> Shift | None:
    """The shift that makes a tree owned by src_xml's <idmap> range owned by dst_xml's (a
    host whose ranges differ, or a container turned (un)privileged); None when they agree.

    Ranges that overlap are refused: the shift moves only ids inside the source range, which
    is what makes a rerun after a crash finish it (ids already moved are left alone); with
    an overlap an id moved once could be moved again."""
    (src, src_count), (dst, dst_count) = _range(src_xml), _range(dst_xml)
    if src == dst:
        return None
    if src_count and dst_count and src_count != dst_count:
        raise UsageError(f"moving {name}: its id range has {src_count} ids, the target's "
                         f"{dst_count}; virtmix shifts a tree only between ranges of one size")
    count = src_count or dst_count or 0
    for a, b in zip(src, dst, strict=True):
        if a != b and a < b + count and b < a + count:
            raise UsageError(f"moving {name}: its id range on the source ({a}..{a + count - 1}) "
                             f"overlaps the target's ({b}..{b + count - 1}); a tree cannot be "
                             "shifted between overlapping ranges",
                             hint="give the entry an explicit `idmap:` that does not overlap")
    return Shift(src, dst, count)


# rsync's --usermap/--groupmap name ids one by one (a LOW-HIGH range maps to one id): the
# ids a shift met, and always the first FLOOR_IDS and 65534 (nobody) of the range.
FLOOR_IDS = 1000
NOBODY = 65534
# Each option's string at most this long: a remote rsync gets both inside one argument of
# `sh -c` (the kernel's limit is 128 KiB per argument). Ids cut off are not lost: rsync
# writes them with the source's id, lists them, and the shift after it moves them.
MAP_LIMIT = 48 * 1024


def id_map(source: int, to: int, count: int, seen: Iterable[int] = ()) -> str:
    """rsync's FROM:TO,... moving ids of [source, source+count) to to.. (ids 0-based)."""
    floor = [*range(min(FLOOR_IDS, count)), *([NOBODY] if NOBODY < count else [])]
    extra = sorted({i for i in seen if 0 <= i < count} - set(floor))
    parts: list[str] = []
    size = 0
    for i in floor + extra:
        pair = f"{source + i}:{to + i}"
        size += len(pair) + 1
        if size > MAP_LIMIT:
            break
        parts.append(pair)
    return ",".join(parts)


@dataclass(frozen=True)
class ShiftDone:
    """One shift of (part of) a copied tree: seconds, entries changed, and the source-range
    uids and gids it met (0-based; a whole-tree shift only)."""

    seconds: float
    changed: int
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()


def shift_tree_at(uri: str, tree: str, shift: Shift) -> ShiftDone:
    """Shift the whole (copied) tree on uri's host to the target's range, reporting the
    source-range ids it met (the shift of only what the frozen copy listed is ListedShift).
    Here by rootfs.idmap directly; on an ssh host by the same code, sent to its python3
    (which prints what it did as JSON)."""
    t0 = time.monotonic()
    if is_local(uri):
        from pathlib import Path

        from virtmix.rootfs.idmap import shift_tree

        seen: tuple[set[int], set[int]] = (set(), set())
        n = shift_tree(Path(tree), shift.to[0], shift.count, gid_offset=shift.to[1],
                       source=shift.source[0], gid_source=shift.source[1], seen=seen)
        return ShiftDone(time.monotonic() - t0, n, frozenset(seen[0]), frozenset(seen[1]))
    from virtmix.hosts.ssh import run_argv, ssh_argv
    from virtmix.rootfs.idmap import remote_script

    res = run_argv([*ssh_argv(uri), _PYTHON_THERE + "exec python3 -"], uri, timeout=3600,
                   input=remote_script(tree, shift.to, shift.source, shift.count))
    return _shift_report(uri, tree, str(res.stdout), t0)


_PYTHON_THERE = ("command -v python3 >/dev/null || { echo 'python3 is needed there to "
                 "shift the tree to its id range' >&2; exit 127; }; ")


def _shift_report(uri: str, tree: str, stdout: str, t0: float) -> ShiftDone:
    """The JSON line a remote shift printed, as a ShiftDone (BackendError if it is not)."""
    out = stdout.strip().splitlines()
    try:
        done = json.loads(out[-1])
        return ShiftDone(time.monotonic() - t0, int(done["changed"]),
                         frozenset(int(i) for i in done.get("uids", ())),
                         frozenset(int(i) for i in done.get("gids", ())))
    except (IndexError, ValueError, KeyError, TypeError):
        raise BackendError(f"shifting {tree} on {uri}: its python3 printed {out[-3:]!r}, "
                           "not the JSON the shift prints") from None


class ListedShift:
    """The shift of what the frozen copy lists, made ready before the freeze: on an ssh
    host its python3 is started while the container still runs (ssh's handshake and the
    interpreter's start cost most of a second in a TCG guest) and waits on stdin for the
    list, so the downtime holds only the shift itself. Here it is a call."""

    def __init__(self, uri: str, tree: str, shift: Shift) -> None:
        self.uri, self.tree, self.shift = uri, tree, shift
        self.proc: subprocess.Popen[bytes] | None = None
        if is_local(uri):
            return
        from virtmix.hosts.ssh import ssh_argv
        from virtmix.rootfs.idmap import BOOT, remote_script

        script = remote_script(tree, shift.to, shift.source, shift.count,
                               stdin=True).encode()
        self.proc = subprocess.Popen(
            [*ssh_argv(uri), _PYTHON_THERE + "exec python3 -c " + shlex.quote(BOOT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # ssh failed: run() says how
            self.proc.stdin.write(b"%d\n" % len(script) + script)
            self.proc.stdin.flush()

    def run(self, paths: list[bytes]) -> ShiftDone:
        t0 = time.monotonic()
        if self.proc is None:
            from pathlib import Path

            from virtmix.rootfs.idmap import shift_paths

            n = shift_paths(Path(self.tree), paths, self.shift.to[0], self.shift.count,
                            gid_offset=self.shift.to[1], source=self.shift.source[0],
                            gid_source=self.shift.source[1])
            return ShiftDone(time.monotonic() - t0, n)
        try:
            out, err = self.proc.communicate(b"\0".join(paths), timeout=3600)
        except subprocess.TimeoutExpired:
            raise BackendError(f"shifting {self.tree} on {self.uri}: over 3600s") from None
        if self.proc.returncode != 0:
            raise BackendError(f"shifting {self.tree} on {self.uri}: exited "
                               f"{self.proc.returncode}: "
                               f"{err.decode(errors='replace').strip()[-500:]}")
        return _shift_report(self.uri, self.tree, out.decode(errors="replace"), t0)

    def close(self) -> None:
        """End the waiting python3 if run() was not reached (a failure, a rollback)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


PYTHON_CHECK = "command -v python3 >/dev/null || echo missing"


def _check_python_there(uri: str, name: str) -> None:
    from virtmix.hosts.ssh import run_remote

    if run_remote(uri, PYTHON_CHECK).strip() == "missing":
        raise UsageError(f"moving {name}: its tree must be shifted to another id range on "
                         f"{uri}, which needs python3 there (none found)",
                         hint="install python3 there (python3-minimal is enough; guests virtmix "
                              "builds have it)")


def one_daemon(src: Backend, dst: Backend, rec: DomainRecord) -> bool:
    """Do both connections reach one libvirtd (two URIs of one machine, e.g. its ssh URI
    from itself)? Then a domain cannot be on both: libvirt's host UUID is the same, and
    the target has the domain `rec` with its UUID (and, running, its ID) already."""
    if src.uri == dst.uri:
        return True
    try:
        there = dst.get(rec.name)
    except VirtmixError:
        return False
    if there.uuid != rec.uuid or there.id != rec.id:
        return False

    def host_uuid(conn: Backend) -> str | None:
        try:
            found = etree.fromstring(conn.capabilities().encode()).findtext("host/uuid")
            return str(found) if found else None
        except (VirtmixError, etree.XMLSyntaxError):
            return None
    a = host_uuid(src)
    return a is not None and a == host_uuid(dst)


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


def _stop(src: Backend, name: str) -> None:
    if src.state(name) != "shutoff":
        try:
            src.destroy(name)
        except VirtmixError:
            # A frozen container whose tasks do not die while frozen: thaw, then kill.
            src.resume(name)
            src.destroy(name)


def _remove_source(src: Backend, name: str, tree: str, hooks: TreeHooks) -> None:
    _stop(src, name)
    fault_point("move-source-destroyed")
    src.undefine(name)
    hooks.drop_source(tree)


# One libvirtd behind both URIs: the domain is redefined in place, and for the crash window
# between its stop and its start there, its definition carries a mark in its <metadata>:
# the state it had before the move and its old tree. A rerun reads it (see _finish_one).
MOVE_NS = "https://virtmix.dev/xmlns/move/1"


def pending_move(xml: str) -> dict[str, str] | None:
    """The mark of an interrupted same-daemon move ({"was": state, "from": old tree})."""
    node = etree.fromstring(xml.encode()).find(f"metadata/{{{MOVE_NS}}}pending")
    return dict(node.attrib) if node is not None else None


def with_mark(xml: str, mark: dict[str, str] | None) -> str:
    """xml with the pending-move mark set to mark (None: without one)."""
    root = etree.fromstring(xml.encode())
    meta = root.find("metadata")
    for old in meta.findall(f"{{{MOVE_NS}}}pending") if meta is not None else ():
        meta.remove(old)
    if mark:
        if meta is None:
            meta = etree.SubElement(root, "metadata")
        node = etree.SubElement(meta, f"{{{MOVE_NS}}}pending", nsmap={"vmmove": MOVE_NS})
        for k, v in mark.items():
            node.set(k, v)
    elif meta is not None and len(meta) == 0:
        root.remove(meta)
    return str(etree.tostring(root, encoding="unicode"))


def _finish_one(src: Backend, dst: Backend, rec: DomainRecord, mark: dict[str, str],
                hooks: TreeHooks, t0: float) -> Moved:
    """A same-daemon move killed once the domain was redefined on its new tree: start it if
    it ran before the move and does not now, then drop the old tree and the mark."""
    name, notes = rec.name, []
    state = rec.state
    if mark.get("was") in RUNNING and not _running(src, name):
        if state == "paused":
            raise StateError(f"{name} is frozen on {src.uri}; `virtmix resume` it, then move "
                             "again")
        src.start(name)
        if not poll(lambda: True if _running(src, name) else None, timeout=START_WAIT,
                    interval=0.02):
            raise StateError(f"{name} did not reach running on {dst.uri} after an "
                             f"interrupted move (state {src.state(name)})")
        time.sleep(SETTLE)
        if not _running(src, name):
            raise StateError(f"{name} started on {dst.uri} but did not stay up "
                             f"(state {src.state(name)})")
        notes.append("finished an interrupted move: started it on its new tree "
                     f"({tree_of(rec.xml)}), as it ran before the move")
        state = "running"
    else:
        notes.append("finished an interrupted move")
    old = mark.get("from")
    if old and old != tree_of(rec.xml):
        try:
            hooks.drop_source(old)
        except NotFoundError:
            pass  # dropped before the kill
    src.define(with_mark(rec.xml, None))
    return Moved(name, src.uri, dst.uri, state, notes=notes,
                 total=time.monotonic() - t0)


def _rollback(src: Backend, dst: Backend, name: str, dst_tree: str, hooks: TreeHooks,
              froze: bool, stopped: bool = False) -> None:
    """Undo the target side and thaw (or start again) the source; each step even when
    another failed."""
    with contextlib.suppress(VirtmixError):
        if dst.state(name) != "shutoff":
            dst.destroy(name)
    with contextlib.suppress(VirtmixError):
        dst.undefine(name)
    with contextlib.suppress(VirtmixError, OSError):
        hooks.drop_target(dst_tree)
    if froze:
        src.resume(name)  # not suppressed: a source left frozen must be said
    if stopped:
        src.start(name)  # it ran before the move: it runs again where it was


def _rollback_one(src: Backend, name: str, old_xml: str, dst_tree: str, hooks: TreeHooks,
                  froze: bool, stopped: bool = False) -> None:
    """_rollback when one libvirtd is both ends: the domain gets its old definition back
    (never undefined: it is the source), the copied tree goes."""
    with contextlib.suppress(VirtmixError):
        now = src.get(name).xml
        if tree_of(now) != tree_of(old_xml):  # redefined for the target
            _stop(src, name)
            src.define(with_mark(old_xml, None))
        elif pending_move(now):  # marked, not yet redefined
            src.define(with_mark(old_xml, None))
    with contextlib.suppress(VirtmixError, OSError):
        hooks.drop_target(dst_tree)
    if froze:
        src.resume(name)
    if stopped:
        src.start(name)


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
    xml = target_definition(rendered, rec)
    src_tree, dst_tree = tree_of(rec.xml), tree_of(xml)
    one = one_daemon(src, dst, rec)
    mark = pending_move(rec.xml) if one else None
    if one:
        if mark and src_tree == dst_tree:
            return _finish_one(src, dst, rec, mark, hooks, t0)
        if src_tree == dst_tree:
            raise UsageError(f"moving {name}: {src.uri} and {dst.uri} reach one libvirtd and "
                             f"name one tree ({src_tree}); there is nothing to move")
    else:
        done = _existing_target(src, dst, rec, hooks)
        if done is not None:
            return done
    shift = id_shift(name, rec.xml, xml)
    was = rec.state
    if mark and was == "shutoff":
        was = mark.get("was", was)  # killed after its stop, before its redefinition
    if was == "paused":
        raise StateError(f"{name} is frozen on {src.uri}; unfreeze it (or stop it) first, "
                         "or finish a move that was interrupted: `virtmix resume` it, then "
                         "move again")
    moved = Moved(name, src.uri, dst.uri, "shutoff")
    # Two connections of this machine naming one tree (a given tree, both daemons here):
    # nothing to copy.
    same = src_tree == dst_tree and is_local(src.uri) and is_local(dst.uri)
    if same and shift:
        raise UsageError(f"moving {name}: the target's id range differs but both hosts use "
                         f"the tree {src_tree}; one tree cannot be owned by both ranges")

    # With a shift, every copy maps the ids it can (the floor first, then those the live
    # shift met): an unchanged file then stays unchanged on the shifted copy.
    umap = gmap = None
    if shift:
        umap = id_map(shift.source[0], shift.to[0], shift.count)
        gmap = id_map(shift.source[1], shift.to[1], shift.count)

    def copy() -> float:
        return 0.0 if same else sync_tree(src.uri, src_tree, dst.uri, dst_tree,
                                          usermap=umap, groupmap=gmap)

    if shift and not is_local(dst.uri):
        _check_python_there(dst.uri, name)  # before anything is copied or frozen
    if not same:
        hooks.prepare(dst_tree)
    say(f"copying {src_tree} to {dst.uri} while {name} runs")
    live = None
    try:
        moved.live_copy = copy()
        fault_point("move-copied-live")
        if shift:  # the whole tree, while it runs: out of the downtime
            say(f"shifting the copy to the target's id range ({shift.to[0]}..) while "
                f"{name} runs")
            live = shift_tree_at(dst.uri, dst_tree, shift)
            umap = id_map(shift.source[0], shift.to[0], shift.count, live.uids)
            gmap = id_map(shift.source[1], shift.to[1], shift.count, live.gids)
            fault_point("move-shifted-live")
    except Exception:
        if not same:  # the source never stopped: only the copy goes
            with contextlib.suppress(VirtmixError, OSError):
                hooks.drop_target(dst_tree)
        raise
    froze = stopped = False
    listed_shift = ListedShift(dst.uri, dst_tree, shift) if shift else None
    try:
        t_freeze = time.monotonic()
        if was in RUNNING and rec.state == "shutoff":
            stopped = True  # a rerun: the kill left it stopped, it ran before
        elif was in RUNNING:
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
        if shift and live and listed_shift:
            # The map did most; what rsync changed anyway (an id it did not name, ACLs, a
            # capability's root, with the source's ids) is shifted now, and only that.
            moved.frozen_copy, listed = sync_tree_listed(src.uri, src_tree, dst.uri, dst_tree,
                                                         usermap=umap, groupmap=gmap)
            fixed = listed_shift.run(listed)
            moved.shift_frozen = fixed.seconds
            moved.shift = live.seconds + fixed.seconds
            moved.notes.append(
                f"its tree was shifted from ids {shift.source[0]}.. to {shift.to[0]}.. (the "
                f"target's range) in {moved.shift:.2f}s: {live.seconds:.2f}s while it ran "
                f"({live.changed} entries), {fixed.seconds:.2f}s in the downtime "
                f"({fixed.changed} of the {len(listed)} entries the frozen copy changed)")
            fault_point("move-shifted")
        else:
            moved.frozen_copy = copy()
        if one:
            # One libvirtd behind both URIs: the domain cannot be defined twice. It is
            # stopped, redefined on the target's tree and started (the rollback below puts
            # its old definition back). Marked first with the state it had and its old
            # tree, until the end: a rerun after a kill finishes it (_finish_one).
            pend = {"was": was, "from": src_tree}
            src.define(with_mark(rec.xml, pend))
            fault_point("move-marked")
            _stop(src, name)
            stopped = stopped or froze
            froze = False
            dst.define(with_mark(xml, pend))
        else:
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
        if one:
            _rollback_one(src, name, rec.xml, dst_tree, hooks, froze, stopped)
        else:
            _rollback(src, dst, name, dst_tree, TreeHooks() if same else hooks, froze,
                      stopped)
        raise
    finally:
        if listed_shift:
            listed_shift.close()
    fault_point("move-committed")
    if one:
        hooks.drop_source(src_tree)  # the domain is the moved one now: only the tree goes
        dst.define(xml)  # the mark goes last: until here a rerun finishes the move
    else:
        _remove_source(src, name, src_tree, TreeHooks() if same else hooks)
    moved.total = time.monotonic() - t0
    return moved
