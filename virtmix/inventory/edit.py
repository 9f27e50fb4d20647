"""Edit an inventory's text in place: move one entry's block to another `containers:` map.

virtmix has no round-trip YAML writer (PyYAML drops comments and layout), so `move`
edits the text itself: the entry's lines (its key line and everything indented deeper,
comments included) are cut and pasted, re-indented, under the target's `containers:`
(made if absent). Only block-style mappings are edited; anything else (a flow-style
`containers: {...}` with entries, anchors) is refused with MoveEditError and the caller
prints what to change by hand. The caller loads the result to check it says what it must.
"""

from __future__ import annotations

from typing import Any

import yaml

from virtmix.errors import InventoryError


class MoveEditError(InventoryError):
    """The inventory's text cannot be edited safely; the admin changes it by hand."""


def _find(text: str, keypath: tuple[str, ...]) -> tuple[int, Any] | None:
    """(0-based line of the last key, its value node) for an exact key path, else None."""
    node: Any = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    line = -1
    for part in keypath:
        if not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if str(key_node.value) == part:
                line, node = key_node.start_mark.line, value_node
                break
        else:
            return None
    return line, node


def _has_anchors(text: str) -> bool:
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            return True
    return False


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int) -> int:
    """The index after the block whose key is on lines[start] (deeper lines, comments and
    blank lines inside it; trailing blank/comment lines at its own level are not its)."""
    own = _indent(lines[start])
    end = start + 1
    last = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#"):
            if _indent(lines[end]) <= own:
                break
            last = end + 1
        elif stripped.startswith("#") and _indent(lines[end]) > own:
            last = end + 1
        end += 1
    return last


def move_entry(text: str, entry_path: tuple[str, ...], section: tuple[str, ...]) -> str:
    """The text with the mapping at entry_path moved into the mapping at `section` (the
    target's containers: path; its parent must exist)."""
    if _has_anchors(text):
        raise MoveEditError("the inventory uses anchors or aliases")
    lines = text.split("\n")
    found = _find(text, entry_path)
    if found is None or found[0] < 0:
        raise MoveEditError(f"{'.'.join(entry_path)} not found as a block-style key")
    start = found[0]
    if lines[start].lstrip(" ").startswith(("{", "-")):
        raise MoveEditError(f"{'.'.join(entry_path)} is inside a flow mapping or a list")
    end = _block_end(lines, start)
    block = lines[start:end]
    rest = lines[:start] + lines[end:]
    old_parent = _find("\n".join(rest), entry_path[:-1])
    if old_parent is not None and isinstance(old_parent[1], yaml.ScalarNode) \
            and old_parent[1].value in ("", "~", "null"):
        i = old_parent[0]  # the section is now empty: an empty mapping, not null
        rest[i] = rest[i].rstrip() + " {}"
    return "\n".join(_paste(rest, block, section, entry_path[-1]))


def _paste(lines: list[str], block: list[str], section: tuple[str, ...],
           name: str) -> list[str]:
    text = "\n".join(lines)
    found = _find(text, section)
    if found is not None:
        at, node = found
        if isinstance(node, yaml.MappingNode) and node.flow_style:
            if node.value:
                raise MoveEditError(f"{'.'.join(section)} is a flow mapping with entries")
            lines[at] = lines[at][:lines[at].index(":") + 1]  # `containers: {}` -> block
        elif isinstance(node, yaml.MappingNode) and name in {str(k.value) for k, _ in node.value}:
            raise MoveEditError(f"{'.'.join(section)} already has {name}")
        key_indent = _indent(lines[at])
        end = _block_end(lines, at)
        kids = [ln for ln in lines[at + 1:end] if ln.strip() and not ln.strip().startswith("#")]
        child = _indent(kids[0]) if kids else key_indent + 2
        return lines[:end] + _reindent(block, child) + lines[end:]
    parent = _find(text, section[:-1])
    if parent is None or not isinstance(parent[1], yaml.MappingNode) or parent[1].flow_style:
        raise MoveEditError(f"{'.'.join(section[:-1])} not found as a block-style mapping")
    at = parent[0]
    end = _block_end(lines, at)
    kids = [ln for ln in lines[at + 1:end] if ln.strip() and not ln.strip().startswith("#")]
    child = _indent(kids[0]) if kids else _indent(lines[at]) + 2
    head = " " * child + section[-1] + ":"
    return lines[:end] + [head] + _reindent(block, child + 2) + lines[end:]


def _reindent(block: list[str], indent: int) -> list[str]:
    shift = indent - _indent(block[0])
    out = []
    for ln in block:
        if not ln.strip():
            out.append(ln)
        elif shift >= 0:
            out.append(" " * shift + ln)
        else:
            out.append(ln[min(-shift, _indent(ln)):])
    return out
