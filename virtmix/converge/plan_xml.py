"""XML helpers of the plan: keep an existing domain's UUID and MACs, and a readable XML diff.

The diff shows only the parts of a definition virtmix owns: libvirt adds dozens of defaults
(controllers, aliases, addresses, clock, emulator...) that would drown the real change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from lxml import etree

from virtmix.domain import idmap, interface
from virtmix.domain.xmlnode import parse as parse_xml
from virtmix.domain.xmlnode import to_string

# Top-level elements of a domain virtmix writes; everything else is libvirt's.
_OWNED_TOP = ("name", "uuid", "description", "metadata", "memory", "memtune", "blkiotune",
              "vcpu", "cputune", "idmap", "os", "features", "devices")
_OWNED_DEVICES = ("disk", "filesystem", "interface")
_RUNTIME = ("alias", "address", "target[@dev]", "boot")  # per-device children libvirt adds


def _set_uuid(root: etree._Element, uuid: str) -> None:
    node = root.find("uuid")
    if node is None:
        node = etree.Element("uuid")
        root.insert(1, node)
    node.text = uuid


def adapt_domain_xml(xml: str, uuid: str, observed_ifaces: Iterable[tuple[str | None, ...]],
                     explicit_macs: set[int]) -> str:
    """The rendered definition with the existing domain's UUID and MAC addresses.

    libvirt refuses to redefine a name with another UUID, and changing a MAC would change
    the address a container or guest gets: keep both (an inventory `mac:` still wins).
    """
    root = parse_xml(xml)
    _set_uuid(root, uuid)
    old = list(observed_ifaces)
    interface.set_macs(root, {i: str(o[2]) for i, o in enumerate(old)
                              if i not in explicit_macs and o[2]})
    return to_string(root)


def adapt_network_xml(xml: str, uuid: str) -> str:
    root = parse_xml(xml)
    _set_uuid(root, uuid)
    return to_string(root)


def owned_view(xml: str) -> str:
    """The part of a domain (or network) document virtmix owns, pretty-printed."""
    root = parse_xml(xml)
    if root.tag == "domain":
        root.attrib.pop("id", None)
        idmap.canonicalize(root)  # uid/gid order is not a change
        ostype = root.find("os/type")
        if root.get("type") == "lxc" and ostype is not None:
            ostype.attrib.pop("arch", None)  # libvirt adds the host's; virtmix leaves it
        for child in list(root):
            if child.tag not in _OWNED_TOP:
                root.remove(child)
        for feat in root.findall("features/*"):
            if feat.tag not in ("privnet", "acpi"):
                feat.getparent().remove(feat)
        devices = root.find("devices")
        if devices is not None:
            for dev in list(devices):
                if dev.tag not in _OWNED_DEVICES or dev.get("device", "disk") != "disk":
                    devices.remove(dev)
            for path in _RUNTIME:
                for node in devices.findall(f"*/{path}"):
                    if not (node.tag == "target" and node.getparent().tag == "disk"):
                        node.getparent().remove(node)
    else:
        for node in root.findall("mac"):
            root.remove(node)
    for el in root.iter():
        if isinstance(el.tag, str):
            el.tail = None
            if el.text is not None and not el.text.strip():
                el.text = None
    etree.indent(root, space="  ")
    return to_string(root) + "\n"


def xml_diff(before: str, after: str, label: str) -> str:
    """A unified diff of the owned parts of two documents ('' when they agree)."""
    a, b = owned_view(before), owned_view(after)
    if a == b:
        return ""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                        f"{label} (defined)", f"{label} (inventory)", n=2))
