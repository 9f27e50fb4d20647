"""YAML reading for inventories and profiles: safe loading, and lines for key paths.

Two safe loaders. PyYAML (with libyaml) is the reference: YAML 1.1 scalars, merge keys, and
error messages with lines. pyyaml-rs (Rust, the optional extra `fast-yaml`: everything works
without it) loads a large inventory several times faster; it speaks
YAML 1.2, so it is used only for documents that have nothing whose meaning differs between
the two (merge keys, yes/no/on/off, dates, octal or underscored numbers), and any error it
raises sends the document to PyYAML, which reports it precisely. It also refuses duplicate
keys, which PyYAML would silently collapse; PyYAML's path checks those separately.

Aliases are bounded before either loader builds anything (SECURITY.md: an inventory is
untrusted until apply): a document with anchors goes to PyYAML, after one pass over its
parse events has counted its aliases and the number of nodes they expand to. A "billion
laughs" of a few hundred bytes expands to billions of nodes in every later walk (the model,
the duplicate-key check, rendering); it is refused with the line of the alias that passes
the limit.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from virtmix.errors import InventoryError

try:
    import pyyaml_rs as _fast
except ImportError:  # optional accelerator
    _fast = None

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader


class _DuplicateKey(Exception):
    """A mapping repeats a key (found while loading; check_duplicate_keys says where)."""


class _CheckingLoader(_Loader):  # type: ignore[misc,valid-type]
    """The safe loader, noticing a repeated key while it builds each mapping, so that a
    large document is not composed a second time only to look for one. Keys a merge (`<<`)
    brings in may be overridden: only the mapping's own keys count."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or \
                        not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    raise _DuplicateKey
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

# What YAML 1.1 (PyYAML) and YAML 1.2 (pyyaml-rs) read differently: merge keys, the 1.1 booleans,
# and numeric-looking plain scalars with underscores, colons (sexagesimal), exponents, leading
# zeros (octal), 0o/0b prefixes, or dates.
_MERGE_OR_BOOL = re.compile(r"<<|(?:^|[\s\[{,:-])(?i:yes|no|on|off|y|n)\s*(?:$|[,\]}#])",
                            re.MULTILINE)
# A plain scalar ends at ", ]}#", whitespace, or a colon followed by whitespace (a key).
_NUMERIC_TOKEN = re.compile(r"(?:^|(?<=[\s\[{,:]))[-+]?\.?\d(?:[^\s,\]}#:]|:(?=\S))*",
                            re.MULTILINE)
# (`-.5`: YAML 1.2 reads a float, PyYAML's 1.1 resolver a string: it allows no sign there.)
_NUMERIC_DIFFERS = re.compile(r"[-+]?0\d+|0[ob]\w*|[-+]?[\d.]+[eE][-+]?\d+|\d{4}-\d\d?-\d.*"
                              r"|[-+]\.\d.*")


# A tag (`!!binary`, `!!set`, `!foo`): pyyaml-rs drops tags and keeps the plain value, where
# PyYAML builds bytes or a set, or refuses an unknown tag. (A `!` inside a scalar may match
# too: that document only takes the slower path.)
_TAG = re.compile(r"(?:^|[\s\[{,:?-])!", re.MULTILINE)


# _MERGE_OR_BOOL's boolean words, split for speed: the separator before a word is consumed
# (a pattern that starts with a character class is scanned for in C, one starting with `^|`
# or a lookbehind is tried at every position: 0.37 -> 0.18 s on 10 MB), and the start of the
# text, which has no separator, is matched on its own. Same answer (tests/core/test_yamlio.py).
_BOOL_AFTER_SEPARATOR = re.compile(r"[\s\[{,:-](?i:yes|no|on|off|y|n)\s*(?:$|[,\]}#])",
                                   re.MULTILINE)
_BOOL_AT_START = re.compile(r"(?i:yes|no|on|off|y|n)\s*(?:$|[,\]}#])", re.MULTILINE)


def _version_sensitive(text: str) -> bool:
    if "<<" in text or _BOOL_AT_START.match(text) or _BOOL_AFTER_SEPARATOR.search(text) or \
            ("!" in text and _TAG.search(text)):
        return True
    # Each distinct token once: an inventory repeats its numbers (sizes, shares) many times.
    for token in set(_NUMERIC_TOKEN.findall(text)):
        if "_" in token or ":" in token or _NUMERIC_DIFFERS.fullmatch(token):
            return True
    return False


def fast_loader_available() -> bool:
    """Whether the optional pyyaml-rs (extra `fast-yaml`) is installed."""
    return _fast is not None


MAX_ALIASES = 200_000  # a `<<: *defaults` per entry of a large inventory is fine
MAX_EXPANDED_NODES = 1_000_000  # nodes added by expanding aliases, beyond the document's own


def check_aliases(text: str, path: Path) -> None:
    """Refuse a document whose aliases are too many or expand to too many nodes."""
    if "&" not in text:  # no anchor, no alias (an alias without an anchor is an error)
        return
    sizes: dict[str, int] = {}
    # One frame per open collection: [nodes so far, anchor]
    stack: list[list[Any]] = [[0, None]]
    aliases = expanded = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                size = sizes.get(event.anchor, 1)
                expanded += size
                stack[-1][0] += size
                if aliases > MAX_ALIASES or expanded > MAX_EXPANDED_NODES:
                    what = (f"more than {MAX_ALIASES} aliases" if aliases > MAX_ALIASES else
                            f"aliases that expand to more than {MAX_EXPANDED_NODES} nodes")
                    raise InventoryError(
                        f"the document has {what} (a YAML alias bomb?); write the values out "
                        "or use profiles", file=str(path), line=event.start_mark.line + 1)
            elif isinstance(event, yaml.ScalarEvent):
                stack[-1][0] += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                stack.append([1, event.anchor])
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                count, anchor = stack.pop()
                if anchor:
                    sizes[anchor] = count
                stack[-1][0] += count
    except yaml.YAMLError:
        return  # the loader reports the syntax error with its line


PARALLEL_SCAN_BYTES = 1_000_000  # above this, the version scan runs beside the parse


def _fast_load(text: str) -> tuple[bool, Any]:
    """(True, data) when pyyaml-rs can load `text` with PyYAML's meaning, else (False, None).
    Documents with anchors always go to PyYAML, whose aliases check_aliases has bounded."""
    if _fast is None or "&" in text:
        return False, None
    scan = _scan_in_child(text) if len(text) > PARALLEL_SCAN_BYTES else None
    if scan is None and _version_sensitive(text):
        return False, None
    try:
        data = _fast.safe_load(text)
    except Exception:  # noqa: BLE001 - PyYAML re-reads it and reports the error precisely
        data = _FAILED
    except BaseException:  # Ctrl-C: no scan left running or unreaped
        if scan is not None:
            _abandon(scan)
        raise
    if scan is not None and _child_verdict(scan, text):
        return False, None  # a document PyYAML reads differently: its result is dropped
    return (False, None) if data is _FAILED else (True, data)


_FAILED = object()


def _scan_in_child(text: str) -> tuple[int, int] | None:
    """Start _version_sensitive(text) in a forked child, so that on a 10 MB inventory the
    scan (0.5 s) and pyyaml-rs's parse (0.6 s) use both CPUs; (pid, read end of its pipe),
    or None where that is not possible or worth it (one CPU, other threads running)."""
    if (os.cpu_count() or 1) < 2 or threading.active_count() > 1 or \
            threading.current_thread() is not threading.main_thread():
        return None
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: answer one byte, never return into the caller's code
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, b"1" if _version_sensitive(text) else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _abandon(scan: tuple[int, int]) -> None:
    pid, read_end = scan
    os.close(read_end)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _child_verdict(scan: tuple[int, int], text: str) -> bool:
    """The child's answer; computed here after all if it gave none (killed, interrupted)."""
    pid, read_end = scan
    try:
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read(1)
    finally:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if answer in (b"0", b"1"):
        return answer == b"1"
    return _version_sensitive(text)


def read_yaml(path: Path, *, what: str = "inventory") -> tuple[Any, str]:
    """Load one YAML document safely; return (data, text). Errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{what} file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read {what} file: {exc}", file=str(path)) from None
    ok, data = _fast_load(text)
    if ok:
        return data, text
    check_aliases(text, path)
    try:
        data = yaml.load(text, Loader=_CheckingLoader)  # noqa: S506 - a CSafeLoader/SafeLoader
    except _DuplicateKey:
        check_duplicate_keys(text, path)  # composes the document to name the key and line
        raise InventoryError("a key appears twice in the same mapping", file=str(path)) \
            from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise InventoryError(f"YAML syntax error: {problem}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"YAML error: {exc}", file=str(path)) from None
    except ValueError:
        # PyYAML's YAML 1.1 resolver takes `0b_` or `0x_` for an integer and then fails to
        # convert it (int('', 2)): say which value, instead of an unexpected error.
        raise _unconvertible_number(text, path) from None
    except RecursionError:
        raise InventoryError("the document is nested too deeply to be an inventory",
                             file=str(path)) from None
    except (TypeError, OverflowError) as exc:  # e.g. an unhashable mapping key: {[1]: 2}
        raise InventoryError(f"YAML value that cannot be loaded: {exc}", file=str(path)) \
            from None
    return data, text


def _unconvertible_number(text: str, path: Path) -> InventoryError:
    constructor = yaml.constructor.SafeConstructor()
    stack = [yaml.compose(text, Loader=_Loader)]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack.extend(v for pair in node.value for v in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node, deep=True)
            except ValueError:
                return InventoryError(f"{node.value!r} looks like a number but is not one; "
                                      "quote it if it is a string", file=str(path),
                                      line=node.start_mark.line + 1)
    return InventoryError("a value could not be converted", file=str(path))


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


# Above this, composing the whole document for one line costs seconds (7 s for 10 MB), and an
# inventory with 20 errors would ask 20 times: large documents are searched as text instead.
COMPOSE_LIMIT = 256 * 1024


@lru_cache(maxsize=8)
def _composed(text: str) -> Any:
    try:
        return yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return None


def line_of(text: str, keypath: tuple[Any, ...]) -> int | None:
    """Return the 1-based line of the deepest node of `keypath` found in the YAML text."""
    if len(text) > COMPOSE_LIMIT:
        return _line_by_text(text, keypath)
    node = _composed(text)
    if node is None:
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


def _starts_with_key(stripped: str, key: str) -> bool:
    """`KEY:` (plain or quoted) at the start of a stripped line. No regex: a hostile key of
    megabytes would cost seconds to compile."""
    for form in (key, f"'{key}'", f'"{key}"'):
        if stripped.startswith(form):
            rest = stripped[len(form):].lstrip(" ")
            if rest.startswith(":") and (len(rest) == 1 or rest[1] in " \t"):
                return True
    return False


def _in_flow_mapping(line: str, key: str) -> bool:
    """`{KEY: ...` or `, KEY: ...` somewhere on the line."""
    at = line.find(key)
    while at != -1:
        before = line[:at].rstrip(" ")
        if before.endswith(("{", ",")) and _starts_with_key(line[at:], key):
            return True
        at = line.find(key, at + 1)
    return False


@lru_cache(maxsize=2)
def _lines(text: str) -> list[str]:
    return text.split("\n")


def _line_by_text(text: str, keypath: tuple[Any, ...]) -> int | None:
    """line_of for large documents, from the text's indentation: each block-style key is
    looked for among its parent's children (the lines indented like the block's first
    line); a key in a flow mapping (`name: {memory: x}`) is on its parent's line. Sequence
    indices and anything it cannot follow give the deepest line found so far."""
    lines = _lines(text)
    start, end = 0, len(lines)
    found: int | None = None
    for part in keypath:  # an int is a sequence index (not followed) or a key (vcpupin)
        key = str(part)
        child_indent = None
        hit = None
        for i in range(start, end):
            line = lines[i]
            stripped = line.lstrip(" ")
            if not stripped or stripped.startswith("#"):
                continue
            indent = len(line) - len(stripped)
            if child_indent is None:
                child_indent = indent
            if indent < child_indent:
                end = i
                break
            if indent == child_indent and _starts_with_key(stripped, key):
                hit = i
                break
        if hit is None:
            if found is not None and _in_flow_mapping(lines[found], key):
                continue  # inside the flow mapping on the parent's line
            return found + 1 if found is not None else None
        found, start = hit, hit + 1
        block_end = end
        for i in range(start, end):  # the key's block: lines indented deeper than it
            line = lines[i]
            stripped = line.lstrip(" ")
            if stripped and not stripped.startswith("#") and \
                    len(line) - len(stripped) <= child_indent:
                block_end = i
                break
        end = block_end
    return found + 1 if found is not None else None
