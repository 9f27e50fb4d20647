"""<idmap>: a container's user namespace map (uid/gid start -> target, count)."""

from __future__ import annotations

from virtmix.domain.xmlnode import Element

_ORDER = {"uid": 0, "gid": 1}


def read(root: Element) -> tuple[int, int, int] | None:
    """The uid map (virtmix writes the same one for gids)."""
    uid = root.find("idmap/uid")
    if uid is None:
        return None
    return (int(uid.get("start", "0")), int(uid.get("target", "0")),
            int(uid.get("count", "0")))


def gid_target(root: Element) -> int | None:
    """The host gid of the container's gid 0 (a classic lxc.idmap may differ from the uid's)."""
    gid = root.find("idmap/gid")
    return int(gid.get("target", "0")) if gid is not None else None


def canonicalize(root: Element) -> None:
    """Sort <idmap>'s children (uid before gid, then by start) so that two maps that differ
    only in element order print the same (libvirt may store them in another order)."""
    node = root.find("idmap")
    if node is not None:
        node[:] = sorted(node, key=lambda n: (_ORDER.get(str(n.tag), 2),
                                              int(n.get("start", "0"))))
