"""Small readers of lxml nodes shared by the element modules: text, integers, sizes."""

from __future__ import annotations

from typing import Any, TypeAlias, cast

from lxml import etree

from virtmix.util.units import kib_from

# lxml.etree._Element: lxml ships no type information, so to mypy it is Any.
Element: TypeAlias = Any


def parse(xml: str | bytes | Element) -> Element:
    """A domain or network document as an element tree (an element is returned as it is)."""
    if isinstance(xml, str):
        xml = xml.encode()
    if isinstance(xml, bytes):
        return cast(Element, etree.fromstring(xml))
    return xml


def to_string(root: Element) -> str:
    return str(etree.tostring(root, encoding="unicode"))


def text(root: Element | None, path: str) -> str | None:
    """The stripped text at path, or None when the node is missing or empty."""
    node = root.find(path) if root is not None else None
    if node is None or not node.text or not node.text.strip():
        return None
    return str(node.text).strip()


def int_at(root: Element | None, path: str) -> int | None:
    value = text(root, path)
    return int(value) if value is not None else None


def kib_at(root: Element | None, path: str) -> int | None:
    """A size element (`<memory unit='MiB'>64</memory>`) in KiB (virtmix.util.units.kib_from)."""
    node = root.find(path) if root is not None else None
    if node is None or not (node.text or "").strip():
        return None
    return kib_from(int(str(node.text).strip()), node.get("unit"))


def child(parent: Element, tag: str, before: tuple[str, ...] = ()) -> Element:
    """parent's <tag>, made when missing (inserted before the first of `before` present)."""
    node = parent.find(tag)
    if node is None:
        node = etree.Element(tag)
        nxt = next((n for n in parent if n.tag in before), None)
        if nxt is not None:
            nxt.addprevious(node)
        else:
            parent.append(node)
    return cast(Element, node)
