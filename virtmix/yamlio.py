"""YAML reading for inventories and profiles: safe loading, and lines for key paths.

The fast path uses libyaml (CSafeLoader) when available. Line numbers are only looked up
when an error must be reported, by composing the node tree again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader


def read_yaml(path: Path, *, what: str = "inventory") -> tuple[Any, str]:
    """Load one YAML document safely; return (data, text). Errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{what} file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read {what} file: {exc}", file=str(path)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - CSafeLoader/SafeLoader only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise InventoryError(f"YAML syntax error: {problem}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"YAML error: {exc}", file=str(path)) from None
    check_duplicate_keys(text, path)
    return data, text


def check_duplicate_keys(text: str, path: Path) -> None:
    """Refuse a mapping that repeats a key: YAML loaders silently keep the last one."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return
    stack = [(root, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                keypath = f"{where}.{key}" if where else key
                if key in seen:
                    raise InventoryError(
                        "key appears twice in the same mapping (the first would be ignored)",
                        file=str(path), key=keypath, line=key_node.start_mark.line + 1,
                    )
                seen.add(key)
                stack.append((value_node, keypath))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))


def line_of(text: str, keypath: tuple[Any, ...]) -> int | None:
    """Return the 1-based line of the deepest node of `keypath` found in the YAML text."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = None
    for part in keypath:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
