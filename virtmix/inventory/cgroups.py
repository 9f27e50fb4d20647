"""Classic cgroup keys (lxc.cgroup.*, cgroup v1 and v2 names) -> virtmix's tune settings.

Pure functions, table-tested. Each layer of an inventory entry (a profile, the entry itself)
is folded separately, so that an entry's `cgroup: {cpu.shares: ...}` overrides a profile's
`cpu: {shares: ...}` just as its own `cpu:` would.

The keys, their conversions and the v1/v2 formulas are rows of virtmix.domain.tunables (a
pure leaf module, so importing it here does not import upward); this module only parses
and folds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from virtmix.domain.tunables import (  # noqa: F401  (re-exported: model.py, tests)
    BLKIO_MAX,
    BLKIO_MIN,
    SHARES_DEFAULT,
    SHARES_MAX,
    SHARES_MIN,
    WEIGHT_DEFAULT,
    WEIGHT_MAX,
    WEIGHT_MIN,
    CgroupKey,
    cgroup_keys,
    io_weight_to_blkio,
    shares_to_weight,
    weight_to_shares,
)

CGROUP_KEYS: dict[str, CgroupKey] = cgroup_keys()


class CgroupKeyError(ValueError):
    """A key that is not a cgroup setting virtmix knows, or a value that does not convert."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def canonical_key(key: str) -> str:
    """Strip the config-file prefixes: `lxc.cgroup.cpu.shares` -> `cpu.shares`."""
    key = key.strip()
    for prefix in ("lxc.cgroup2.", "lxc.cgroup."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def suggest_key(key: str) -> str | None:
    """The accepted key a typo most likely meant (`cpuset.shares` -> `cpu.shares`)."""
    tail = key.rsplit(".", 1)[-1]
    same_tail = [k for k in CGROUP_KEYS if k.rsplit(".", 1)[-1] == tail]
    if same_tail:
        return same_tail[0]
    close = difflib.get_close_matches(key, list(CGROUP_KEYS), n=1, cutoff=0.6)
    return close[0] if close else None


def lookup(key: str) -> CgroupKey:
    """Return the definition of a cgroup key, or raise CgroupKeyError with a suggestion."""
    name = canonical_key(key)
    if name in CGROUP_KEYS:
        return CGROUP_KEYS[name]
    hint = suggest_key(name)
    msg = f"{key!r} is not a cgroup setting virtmix knows"
    msg += f"; did you mean {hint!r}?" if hint else f" (known: {', '.join(CGROUP_KEYS)})"
    raise CgroupKeyError(key, msg)


def parse_config_lines(text: str) -> dict[str, str]:
    """Parse classic lxc config lines (`lxc.cgroup.cpu.shares = 2048`) into key -> value."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise CgroupKeyError(line, f"expected 'KEY = VALUE', got {line!r}")
        key, value = (p.strip() for p in line.split("=", 1))
        out[key] = value
    return out


def to_settings(cgroup: Mapping[str, Any] | list[str] | str) -> dict[str, dict[str, Any]]:
    """Convert a `cgroup:` block into {section: {field: value}} for the inventory entry.

    Accepts a mapping of keys to values, a list of config lines, or one multi-line string.
    Two keys that set the same field (e.g. cpu.shares and cpu.weight) are an error.
    """
    if isinstance(cgroup, str):
        pairs = parse_config_lines(cgroup)
    elif isinstance(cgroup, list):
        pairs = {}
        for item in cgroup:
            if not isinstance(item, str):
                raise CgroupKeyError(str(item), f"expected 'KEY = VALUE' lines, got {item!r}")
            pairs.update(parse_config_lines(item))
    elif isinstance(cgroup, Mapping):
        pairs = dict(cgroup)
    else:
        raise CgroupKeyError("cgroup", "expected a mapping of cgroup keys to values")

    out: dict[str, dict[str, Any]] = {}
    set_by: dict[tuple[str, str], str] = {}
    for key, value in pairs.items():
        spec = lookup(str(key))
        try:
            converted = spec.convert(value)
        except ValueError as exc:
            raise CgroupKeyError(str(key), f"{key}: {exc}") from None
        fields = converted if spec.field == "*" else {spec.field: converted}
        for field, val in fields.items():
            other = set_by.get((spec.section, field))
            if other:
                raise CgroupKeyError(str(key), f"{key} and {other} both set {spec.section}.{field}")
            set_by[(spec.section, field)] = str(key)
            out.setdefault(spec.section, {})[field] = val
    return out
