"""Parsing and formatting of sizes ("256MiB") and CPU sets ("0-3,8"): pure functions."""

from __future__ import annotations

import re
from functools import lru_cache

_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([A-Za-z]{0,3})\s*\Z")

# libvirt keeps sizes in KiB as unsigned long long, and its memory tunables treat anything
# from 2^53-1 KiB (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED) up as "no limit": a size must be below.
MAX_SIZE_KIB = 2**53 - 2
# libvirt's VIR_DOMAIN_CPUMASK_LEN: the most CPUs a cpuset may name (0..8191).
MAX_CPUS = 8192

# IEC (powers of 1024) and SI (powers of 1000) suffixes; a bare "M"/"G" means MiB/GiB, as in
# libvirt's and lxc's own configuration files.
_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}

_XML_UNITS = {**_UNITS, "bytes": 1}  # libvirt's `unit=` also accepts "bytes"


@lru_cache(maxsize=4096)
def _parse_size_text(value: str) -> int:
    m = _SIZE_RE.match(value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot parse size {value[:40]!r}: expected e.g. 512MiB, 2GiB, 1G "
                         "or bytes")
    whole, _, frac = m.group(1).partition(".")
    unit = _UNITS[m.group(2).lower()]
    # Exact arithmetic: a float would turn 30 digits into inf (OverflowError in int()).
    size = int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
    _check_size(size, value)
    return size


def _check_size(size: int, shown: object) -> None:
    if size > MAX_SIZE_KIB * 1024:
        raise ValueError(f"size {shown!r} is larger than libvirt accepts "
                         f"(at most {MAX_SIZE_KIB} KiB)")


def parse_size(value: int | str) -> int:
    """Return a size in bytes from an int (bytes) or a string such as "256MiB" or "2G"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 256MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        _check_size(value, value)
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 256MiB, got {value!r}")
    return _parse_size_text(value)


def parse_size_kib(value: int | str) -> int:
    """Return a size in KiB (libvirt's unit), rounding up to a whole KiB."""
    return -(-parse_size(value) // 1024)


def kib_from(number: int, unit: str | None) -> int:
    """A size in a libvirt `unit=` (KiB when absent) -> KiB, rounded up to a whole KiB.

    The one rounding rule for sizes: up, as parse_size_kib, so a limit is never lowered.
    Unknown units are read as KiB (libvirt itself refuses them).
    """
    if not unit or unit == "KiB":
        return number  # what libvirt itself writes: no conversion
    factor = _XML_UNITS.get(unit.lower(), 1024)
    return -(-number * factor // 1024)


def format_kib(kib: int) -> str:
    """Format KiB the way an admin writes it: the largest exact IEC unit."""
    for unit, factor in (("TiB", 1024**3), ("GiB", 1024**2), ("MiB", 1024), ("KiB", 1)):
        if kib % factor == 0 and kib >= factor:
            return f"{kib // factor}{unit}"
    return f"{kib}KiB"


_CPUSET_RE = re.compile(r"^\^?\d{1,9}(-\d{1,9})?\Z")


def parse_cpuset(text: str | int) -> frozenset[int]:
    """Parse a cpuset list ("0-3,8,^2") into the set of CPU numbers it names.

    libvirt's syntax: comma-separated numbers and ranges, "^N" excludes N. An empty or
    descending range is an error, so typos do not silently pin to nothing.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a cpuset such as '0-3,8', got {text!r}")
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a cpuset such as '0-3,8', got {text!r}")
    if len(text) > 4 * MAX_CPUS:
        raise ValueError(f"cpuset of {len(text)} characters is longer than any real one")
    return _parse_cpuset_text(text)


@lru_cache(maxsize=4096)
def _parse_cpuset_text(text: str) -> frozenset[int]:
    include: set[int] = set()
    exclude: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not _CPUSET_RE.match(part):
            raise ValueError(f"bad cpuset {text!r}: {part!r} is not N, N-M or ^N")
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
            if lo > hi:
                raise ValueError(f"bad cpuset {text!r}: range {part} runs backwards")
            _check_cpu(hi, text)
            target.update(range(lo, hi + 1))
        else:
            _check_cpu(int(part), text)
            target.add(int(part))
    cpus = include - exclude
    if not cpus:
        raise ValueError(f"cpuset {text!r} names no CPU")
    return frozenset(cpus)


def _check_cpu(cpu: int, text: str) -> None:
    if cpu >= MAX_CPUS:
        raise ValueError(f"cpuset {text!r} names CPU {cpu}; libvirt handles CPUs 0 to "
                         f"{MAX_CPUS - 1}")


def format_cpuset(cpus: frozenset[int] | set[int]) -> str:
    """Format CPU numbers as the shortest libvirt cpuset string ("0-3,8")."""
    out: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def normalize_cpuset(text: str | int) -> str:
    """Canonical form of a cpuset string, so "1,0" and "0-1" compare equal."""
    return _normalize_cached(parse_cpuset(text))


@lru_cache(maxsize=4096)
def _normalize_cached(cpus: frozenset[int]) -> str:
    return format_cpuset(cpus)
