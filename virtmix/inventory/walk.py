"""One pass over a loaded YAML tree before the model sees it: mapping keys that are not
strings, control characters in any key or value, and nesting too deep to be an inventory.

Done on the raw data (not per field in the model) so that no string escapes the check,
whatever key it sits under; pydantic then checks each field's meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from virtmix.inventory.strings import control_character

# Keys whose mapping has integer keys by design (vCPU number -> cpuset).
INT_KEYED = frozenset({"vcpupin"})
# Free text that may span lines: newlines and tabs are allowed there (never other controls).
MULTILINE = frozenset({"description", "cgroup"})
MAX_DEPTH = 64  # an inventory is ~8 levels deep; deeper is hostile or a mistake


def problems(tree: Any) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(key path, message) for each problem found, in document order."""
    stack: list[tuple[Any, tuple[Any, ...], bool]] = [(tree, (), False)]
    while stack:
        node, where, multiline = stack.pop()
        if len(where) > MAX_DEPTH:
            yield where, f"nested more than {MAX_DEPTH} levels deep"
            continue
        if isinstance(node, dict):
            parent = where[-1] if where else None
            items = list(node.items())
            for key, value in reversed(items):
                if not isinstance(key, str) and not (parent in INT_KEYED and
                                                     isinstance(key, int) and
                                                     not isinstance(key, bool)):
                    yield (*where, _shown(key)), (
                        f"a key must be a string, got {_shown(key)} ({type(key).__name__}); "
                        "quote it if it is meant as text")
                    continue
                if isinstance(key, str):
                    bad = control_character(key)
                    if bad:
                        # shown escaped: the key path is printed in the message
                        yield (*where, repr(key)), f"key contains a control character ({bad})"
                        continue
                stack.append((value, (*where, key), multiline or key in MULTILINE))
        elif isinstance(node, list):
            stack.extend((v, (*where, i), multiline) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, str):
            bad = control_character(node, allow_newlines=multiline)
            if bad:
                yield where, f"contains a control character ({bad})"
        elif isinstance(node, bytes):  # pydantic would take them for text, unchecked
            yield where, "a binary value (!!binary) is not accepted; write the text"
        elif node is not None and not isinstance(node, bool | int | float):
            # !!set, !!timestamp and the like: nothing in an inventory is one, and their
            # contents would escape the checks above
            yield where, (f"a YAML {type(node).__name__} is not accepted here; quote it if "
                          "it is meant as text")


def _shown(key: Any) -> str:
    return "null" if key is None else repr(key) if isinstance(key, str) else str(key)
