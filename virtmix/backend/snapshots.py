"""Guest snapshots through libvirt's snapshot API (the LXC driver has none: containers are
snapshotted through their trees, virtmix/snapshots/trees.py).

A mixin of backend.libvirt_conn.Connection, like admin_ops; its methods are part of
backend.protocol.Backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import libvirt
from lxml import etree

from virtmix.backend.records import GuestSnapshot
from virtmix.backend.translate import translate
from virtmix.errors import NotFoundError


class SnapshotOps:
    """Internal snapshots of guests; mixed into Connection."""

    uri: str

    if TYPE_CHECKING:
        def _lookup(self, name: str) -> Any: ...

    def create_snapshot(self, name: str, snap: str, description: str = "") -> None:
        """An internal snapshot (disks, and memory when running): qcow2 disks hold it all.

        ATOMIC: libvirt takes the whole snapshot or none of it.
        """
        root = etree.Element("domainsnapshot")
        etree.SubElement(root, "name").text = snap
        if description:
            etree.SubElement(root, "description").text = description
        xml = etree.tostring(root, encoding="unicode")
        with translate(f"taking snapshot {snap} of {name}", self.uri):
            self._lookup(name).snapshotCreateXML(
                xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)

    def list_snapshots(self, name: str) -> list[GuestSnapshot]:
        out = []
        with translate(f"listing snapshots of {name}", self.uri):
            for s in self._lookup(name).listAllSnapshots(0):
                tree = etree.fromstring(s.getXMLDesc(0).encode())
                out.append(GuestSnapshot(
                    name=str(s.getName()), created=int(tree.findtext("creationTime") or 0),
                    state=tree.findtext("state") or "",
                    description=tree.findtext("description") or ""))
        return sorted(out, key=lambda s: (s.created, s.name))

    def _snapshot(self, name: str, snap: str) -> Any:
        try:
            return self._lookup(name).snapshotLookupByName(snap, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise NotFoundError(f"{name} has no snapshot named {snap!r} on {self.uri}",
                                    hint=f"see `virtmix snapshot ls {name}`") from None
            raise

    def revert_snapshot(self, name: str, snap: str) -> None:
        """Back to the snapshot, in the state it was taken in (running, paused or off)."""
        with translate(f"reverting {name} to {snap}", self.uri):
            self._lookup(name).revertToSnapshot(self._snapshot(name, snap),
                                                libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)

    def delete_snapshot(self, name: str, snap: str) -> None:
        with translate(f"deleting snapshot {snap} of {name}", self.uri):
            self._snapshot(name, snap).delete(0)
