"""Guest snapshots through libvirt's snapshot API (the LXC driver has none: see
virtmix/snapshots/trees.py for containers)."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from lxml import etree

from virtmix.backend.libvirt_conn import Connection, _translate
from virtmix.errors import NotFoundError


@dataclass(frozen=True)
class GuestSnapshot:
    name: str
    created: int  # seconds since the epoch, as libvirt records it
    state: str    # the domain's state when it was taken (running, paused, shutoff)
    description: str


def _dom(conn: Connection, name: str) -> libvirt.virDomain:
    with _translate(f"looking up {name}", conn.uri):
        return conn.raw.lookupByName(name)


def create_snapshot(conn: Connection, name: str, snap: str, description: str = "") -> None:
    """An internal snapshot (disks, and memory when running): qcow2 disks hold it all.

    ATOMIC: libvirt either takes the whole snapshot or none of it.
    """
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = snap
    if description:
        etree.SubElement(root, "description").text = description
    xml = etree.tostring(root, encoding="unicode")
    with _translate(f"taking snapshot {snap} of {name}", conn.uri):
        _dom(conn, name).snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)


def list_snapshots(conn: Connection, name: str) -> list[GuestSnapshot]:
    out = []
    with _translate(f"listing snapshots of {name}", conn.uri):
        for s in _dom(conn, name).listAllSnapshots(0):
            tree = etree.fromstring(s.getXMLDesc(0).encode())
            out.append(GuestSnapshot(
                name=s.getName(), created=int(tree.findtext("creationTime") or 0),
                state=tree.findtext("state") or "", description=tree.findtext("description")
                or ""))
    return sorted(out, key=lambda s: (s.created, s.name))


def _snap(conn: Connection, name: str, snap: str) -> libvirt.virDomainSnapshot:
    dom = _dom(conn, name)
    try:
        return dom.snapshotLookupByName(snap, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFoundError(f"{name} has no snapshot named {snap!r} on {conn.uri}",
                                hint=f"see `virtmix snapshot ls {name}`") from None
        raise


def revert_snapshot(conn: Connection, name: str, snap: str) -> None:
    """Back to the snapshot, in the state it was taken in (running, paused or off)."""
    with _translate(f"reverting {name} to {snap}", conn.uri):
        s = _snap(conn, name, snap)
        _dom(conn, name).revertToSnapshot(s, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)


def delete_snapshot(conn: Connection, name: str, snap: str) -> None:
    with _translate(f"deleting snapshot {snap} of {name}", conn.uri):
        _snap(conn, name, snap).delete(0)
