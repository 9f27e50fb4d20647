"""Classic cgroup keys (lxc.cgroup.*, cgroup v1 and v2 names) -> virtmix's tune settings.

Pure functions, table-tested. Each layer of an inventory entry (a profile, the entry itself)
is folded separately, so that an entry's `cgroup: {cpu.shares: ...}` overrides a profile's
`cpu: {shares: ...}` just as its own `cpu:` would.

Conversions between cgroup v1 and v2 units use systemd's proportional formulas, which keep the
defaults aligned (cpu.shares 1024 == cpu.weight 100, blkio.weight 500 == io.weight 100):
    cpu.weight   = shares * 100 / 1024     (clamped to 1..10000)
    cpu.shares   = weight * 1024 / 100     (clamped to 2..262144)
    blkio.weight = io.weight * 500 / 100   (clamped to 10..1000)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from virtmix.util.units import normalize_cpuset, parse_size

SHARES_MIN, SHARES_MAX, SHARES_DEFAULT = 2, 262144, 1024
WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10000, 100
BLKIO_MIN, BLKIO_MAX = 10, 1000


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares -> cgroup v2 cpu.weight (systemd's formula)."""
    return _clamp(round(shares * WEIGHT_DEFAULT / SHARES_DEFAULT), WEIGHT_MIN, WEIGHT_MAX)


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight -> cgroup v1 cpu.shares (inverse of shares_to_weight)."""
    return _clamp(round(weight * SHARES_DEFAULT / WEIGHT_DEFAULT), SHARES_MIN, SHARES_MAX)


def io_weight_to_blkio(weight: int) -> int:
    """cgroup v2 io.weight -> cgroup v1 blkio.weight (systemd's formula)."""
    return _clamp(round(weight * 500 / 100), BLKIO_MIN, BLKIO_MAX)


@dataclass(frozen=True)
class CgroupKey:
    """One accepted cgroup key: where it lands in the entry and how its value converts."""

    name: str
    section: str  # "cpu", "memtune" or "blkio" in the inventory entry
    field: str
    convert: Callable[[Any], Any]
    meaning: str


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def _ranged(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        n = _int(value)
        if not lo <= n <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {n}")
        return n

    return conv


def _quota(value: Any) -> int:
    n = _int(value)
    if n != -1 and n < 1000:
        raise ValueError(f"must be -1 (no limit) or at least 1000 microseconds, got {n}")
    return n


def _limit_bytes(value: Any) -> int | None:
    """A memory limit in bytes or a size string; -1/"max" means no limit (None)."""
    text = str(value).strip()
    if text in ("-1", "max"):
        return None
    return parse_size(int(text) if text.isdigit() else value)


def _cpu_max(value: Any) -> dict[str, int]:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD", "max PERIOD" or "max"."""
    parts = str(value).split()
    if not parts or len(parts) > 2:
        raise ValueError(f"expected 'QUOTA PERIOD' or 'max [PERIOD]', got {value!r}")
    out = {"quota": -1 if parts[0] == "max" else _quota(parts[0])}
    if len(parts) == 2:
        out["period"] = _ranged(1000, 1000000)(parts[1])
    return out


CGROUP_KEYS: dict[str, CgroupKey] = {
    k.name: k
    for k in (
        CgroupKey("cpuset.cpus", "cpu", "cpuset", normalize_cpuset, "CPUs the domain may run on"),
        CgroupKey("cpu.shares", "cpu", "shares", _ranged(SHARES_MIN, SHARES_MAX),
                  "relative CPU weight (cgroup v1, default 1024)"),
        CgroupKey("cpu.weight", "cpu", "shares",
                  lambda v: weight_to_shares(_ranged(WEIGHT_MIN, WEIGHT_MAX)(v)),
                  "relative CPU weight (cgroup v2, default 100), stored as shares"),
        CgroupKey("cpu.cfs_quota_us", "cpu", "quota", _quota, "CPU time per period, us"),
        CgroupKey("cpu.cfs_period_us", "cpu", "period", _ranged(1000, 1000000),
                  "CFS period, us"),
        CgroupKey("cpu.max", "cpu", "*", _cpu_max, "cgroup v2 quota and period"),
        CgroupKey("memory.limit_in_bytes", "memtune", "hard_limit", _limit_bytes,
                  "hard memory limit"),
        CgroupKey("memory.max", "memtune", "hard_limit", _limit_bytes,
                  "hard memory limit (cgroup v2)"),
        CgroupKey("memory.soft_limit_in_bytes", "memtune", "soft_limit", _limit_bytes,
                  "soft memory limit (reclaimed first under pressure)"),
        CgroupKey("memory.high", "memtune", "soft_limit", _limit_bytes,
                  "memory throttling threshold (cgroup v2)"),
        CgroupKey("memory.memsw.limit_in_bytes", "memtune", "swap_hard_limit", _limit_bytes,
                  "memory plus swap limit"),
        CgroupKey("blkio.weight", "blkio", "weight", _ranged(BLKIO_MIN, BLKIO_MAX),
                  "relative block I/O weight (cgroup v1, 10..1000)"),
        CgroupKey("io.weight", "blkio", "weight",
                  lambda v: io_weight_to_blkio(_ranged(WEIGHT_MIN, WEIGHT_MAX)(v)),
                  "relative block I/O weight (cgroup v2, 1..10000), stored as blkio weight"),
    )
}


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
