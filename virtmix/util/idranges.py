"""Each unprivileged container its own host id range, so root in one owns nothing in another.

As Incus's isolated idmaps: a built container gets 65536 host uids/gids of its own. The range
is a slot chosen deterministically from the container's name (a hash), with linear probing
past slots already taken by containers recorded in the storage directory, by explicit
`idmap:` ranges of the inventory and by ranges assigned earlier in the same pass. Once a
container's tree is made its range is recorded in its state.json (and in its domain's
metadata) and never reshuffled: recorded ranges are reused as they are.

Slots start above the single range older virtmix used for every container (100000..165535),
so trees made before keep theirs and never overlap a new one. Pure functions, except
recorded_ranges() which reads the storage directory's state files.
"""

from __future__ import annotations

import hashlib
import json
import os

from virtmix.util.identity import IDMAP

LEGACY = IDMAP  # (container id, host id, count): the range shared before
COUNT = 65536
BASE = 1 << 20  # 1048576: above LEGACY
# Ranges stay below 2^31: a kernel before 6.9 parses devpts's gid= mount option as a signed
# int, so libvirt_lxc's devpts mount for a range above it failed with EINVAL (seen in a
# Debian 12 guest, kernel 6.1: "Failed to mount devpts ... Invalid argument"), and other
# interfaces (tmpfs uid=, some tools) also take ids as int.
MAX_ID = (1 << 31) - 1
SLOTS = (MAX_ID - BASE) // COUNT  # 32751 ranges

IdMap = tuple[int, int, int, int]  # (start 0, host uid, count, host gid)


def slot_range(slot: int) -> IdMap:
    target = BASE + slot * COUNT
    return (0, target, COUNT, target)


def home_slot(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % SLOTS


def _spans(m: IdMap) -> tuple[tuple[int, int], tuple[int, int]]:
    return (m[1], m[1] + m[2]), (m[3], m[3] + m[2])


def overlaps(a: IdMap, b: IdMap) -> bool:
    """True when the two maps share a host uid or a host gid."""
    (au, ag), (bu, bg) = _spans(a), _spans(b)
    return (au[0] < bu[1] and bu[0] < au[1]) or (ag[0] < bg[1] and bg[0] < ag[1])


class Allocator:
    """Picks ranges for one id space (one host, or one guest for nested containers)."""

    def __init__(self, taken: list[IdMap] | None = None) -> None:
        self.slots: set[int] = set()
        self.other: set[IdMap] = set()  # not slot-aligned (explicit, legacy): by overlap
        for m in taken or []:
            self.take(m)

    def take(self, m: IdMap) -> None:
        if m[1] == m[3] and m[2] == COUNT and m[1] >= BASE and (m[1] - BASE) % COUNT == 0:
            self.slots.add((m[1] - BASE) // COUNT)
        else:
            self.other.add(m)

    def free(self, slot: int) -> bool:
        if slot in self.slots:
            return False
        m = slot_range(slot)
        return not any(overlaps(m, o) for o in self.other)

    def pick(self, name: str) -> IdMap:
        """The first free slot from the name's own, going up (wrapping), taken for it."""
        home = home_slot(name)
        for i in range(SLOTS):
            slot = (home + i) % SLOTS
            if self.free(slot):
                self.slots.add(slot)
                return slot_range(slot)
        raise ValueError(f"no free id range left for {name} ({SLOTS} ranges of {COUNT})")


def as_idmap(value: object) -> IdMap | None:
    """A recorded idmap (state.json: [start, target, count] or with the gid target)."""
    if not isinstance(value, (list, tuple)) or len(value) not in (3, 4):
        return None
    try:
        start, uid, count = (int(v) for v in value[:3])
        gid = int(value[3]) if len(value) == 4 else uid
    except (TypeError, ValueError):
        return None
    return (start, uid, count, gid)


def recorded_ranges(storage_root: str) -> dict[str, IdMap]:
    """Ranges recorded by containers in a storage directory's containers/*/state.json."""
    out: dict[str, IdMap] = {}
    base = os.path.join(storage_root, "containers")
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(base, name, "state.json"), "rb") as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        m = as_idmap(state.get("idmap")) if isinstance(state, dict) else None
        if m is not None:
            out[name] = m
    return out


def isolated(setting: str | None = None, cgroup_version: str | None = None) -> bool:
    """Whether a new built container gets a range of its own or shares LEGACY: the
    inventory's settings.idmap, else env VIRTMIX_IDMAP, else 'auto'.

    'auto' isolates where the containers' cgroups are cgroup v2 (each container its own
    tree: guests virtmix builds, v2 hosts) and shares on a cgroup v1 host or where the
    version is unknown. On a v1 host without systemd (the project's CI hosts) the
    name=systemd hierarchy is one tree for all containers: libvirt chowns it to the mapped
    root of the container that starts last, and systemd in a container with another range
    exits right after "Welcome" (reproduced with 200000, 1376256, 2^31; docs/rootfs.md).
    """
    choice = setting or os.environ.get("VIRTMIX_IDMAP") or "auto"
    if choice == "auto":
        return cgroup_version == "v2"
    return choice != "shared"


def pick_for(name: str, storage_root: str, explicit: IdMap | None = None, *,
             cgroup_version: str | None = None) -> IdMap:
    """The range of container `name` in this storage: recorded, explicit, or a new slot
    (LEGACY where ranges are shared, see isolated())."""
    recorded = recorded_ranges(storage_root)
    if explicit is not None:
        return explicit
    if name in recorded:
        return recorded[name]
    if not isolated(cgroup_version=cgroup_version):
        return (*LEGACY, LEGACY[1])
    return Allocator(list(recorded.values())).pick(name)


def conflicting(name: str, idmap: IdMap, storage_root: str) -> str | None:
    """Another container recorded in the storage whose range overlaps idmap, if any."""
    for other, m in sorted(recorded_ranges(storage_root).items()):
        if other != name and overlaps(idmap, m):
            return other
    return None
