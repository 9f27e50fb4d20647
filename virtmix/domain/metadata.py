"""<metadata><virtmix:entry .../>: who made a domain (site, inventory, host, kind...)."""

from __future__ import annotations

from virtmix.domain.xmlnode import Element
from virtmix.util.identity import VIRTMIX_NS

INFO_ONLY = frozenset({"inventory"})  # metadata keys plan never compares


def read(root: Element) -> dict[str, str] | None:
    node = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    return {str(k): str(v) for k, v in node.attrib.items()} if node is not None else None


def set_created_by(root: Element, created_by: str, template: str) -> None:
    """Turn an inventory's entry metadata into that of a domain `virtmix create` made: no
    site or inventory owns it, and destroy may delete its tree."""
    node = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    assert node is not None, "the LXC template always writes virtmix metadata"
    for key in ("site", "inventory"):
        node.attrib.pop(key, None)
    node.set("created-by", created_by)
    node.set("template", template)
