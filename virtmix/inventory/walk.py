"""One pass over a loaded YAML tree before the model sees it: mapping keys that are not
strings, control characters in any key or value, values of types no inventory has (binary,
sets, dates), and nesting too deep to be an inventory.

Done on the raw data (not per field in the model) so that no string escapes the check,
whatever key it sits under; pydantic then checks each field's meaning.
"""

from __future__ import annotations

from typing import Any

from virtmix.inventory.strings import control_character

# Keys whose mapping has integer keys by design (vCPU number -> cpuset).
INT_KEYED = frozenset({"vcpupin"})
# Free text that may span lines: newlines and tabs are allowed there (never other controls).
# cloud-init's user_data/vendor_data are scripts or cloud-config passed through as text.
MULTILINE = frozenset({"description", "cgroup", "user_data", "vendor_data"})
MAX_DEPTH = 64  # an inventory is ~8 levels deep; deeper is hostile or a mistake
_SCALARS = (bool, int, float)


def problems(tree: Any, limit: int = 1000) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, message) for each problem found (at most `limit`), in document order.

    Recursive with one shared path list: building a key-path tuple per node cost more than
    the checks themselves on a 10 MB inventory."""
    found: list[tuple[tuple[Any, ...], str]] = []
    path: list[Any] = []

    def visit(node: Any, multiline: bool) -> None:
        if len(found) >= limit:
            return
        if isinstance(node, str):
            if not node.isprintable():
                bad = control_character(node, allow_newlines=multiline)
                if bad:
                    found.append((tuple(path), f"contains a control character ({bad})"))
        elif isinstance(node, dict):
            if len(path) >= MAX_DEPTH:
                found.append((tuple(path), f"nested more than {MAX_DEPTH} levels deep"))
                return
            int_keyed = bool(path) and path[-1] in INT_KEYED
            for key, value in node.items():
                if type(key) is not str:
                    if not (int_keyed and type(key) is int):
                        shown = _shown(key)
                        found.append(((*path, shown), (
                            f"a key must be a string, got {shown} ({type(key).__name__}); "
                            "quote it if it is meant as text")))
                        continue
                elif not key.isprintable():
                    bad = control_character(key)
                    if bad:  # the key shown escaped: the key path is printed in the message
                        found.append(((*path, repr(key)),
                                      f"key contains a control character ({bad})"))
                        continue
                path.append(key)
                visit(value, multiline or key in MULTILINE)
                path.pop()
        elif isinstance(node, list):
            if len(path) >= MAX_DEPTH:
                found.append((tuple(path), f"nested more than {MAX_DEPTH} levels deep"))
                return
            for i, value in enumerate(node):
                path.append(i)
                visit(value, multiline)
                path.pop()
        elif isinstance(node, bytes):  # pydantic would take them for text, unchecked
            found.append((tuple(path),
                          "a binary value (!!binary) is not accepted; write the text"))
        elif node is not None and not isinstance(node, _SCALARS):
            # !!set, !!timestamp and the like: nothing in an inventory is one, and their
            # contents would escape the checks above
            found.append((tuple(path), f"a YAML {type(node).__name__} is not accepted here; "
                          "quote it if it is meant as text"))

    visit(tree, False)
    return found


def _shown(key: Any) -> str:
    return "null" if key is None else repr(key) if isinstance(key, str) else str(key)
