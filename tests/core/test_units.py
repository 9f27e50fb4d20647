"""Sizes and cpusets: table tests plus hypothesis round trips."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtmix.util.units import (
    format_cpuset,
    format_kib,
    kib_from,
    parse_cpuset,
    parse_size,
    parse_size_kib,
)


@pytest.mark.parametrize("text,expected", [
    ("256MiB", 256 * 1024**2), ("2GiB", 2 * 1024**3), ("2G", 2 * 1024**3), ("1g", 1024**3),
    ("512M", 512 * 1024**2), ("64k", 64 * 1024), ("1GB", 10**9), ("1.5GiB", 1536 * 1024**2),
    (4096, 4096), ("4096", 4096), (" 8 MiB ", 8 * 1024**2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "", "-1", "MiB", True, None, -5, [1]])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_kib_rounds_up():
    assert parse_size_kib(1) == 1
    assert parse_size_kib("1MiB") == 1024


@pytest.mark.parametrize("kib,text", [(1024, "1MiB"), (1536, "1536KiB"), (2097152, "2GiB"),
                                      (3, "3KiB")])
def test_format_kib(kib, text):
    assert format_kib(kib) == text


@pytest.mark.parametrize("text,cpus", [
    ("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-3,^2", {0, 1, 3}), ("1,0", {0, 1}),
    ("0-1, 4", {0, 1, 4}), (3, {3}),
])
def test_parse_cpuset(text, cpus):
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize("bad", ["", "0-", "3-1", "a", "1,,2", "^1", "0-1-2", "1.5", True])
def test_parse_cpuset_rejects(bad):
    with pytest.raises(ValueError):
        parse_cpuset(bad)


@given(st.frozensets(st.integers(min_value=0, max_value=255), min_size=1))
def test_cpuset_round_trip(cpus):
    text = format_cpuset(cpus)
    assert parse_cpuset(text) == cpus
    assert format_cpuset(parse_cpuset(text)) == text  # canonical form is stable


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 8)), min_size=1, max_size=6))
def test_cpuset_parses_any_range_list(ranges):
    text = ",".join(f"{lo}-{lo + n}" if n else str(lo) for lo, n in ranges)
    expected = set()
    for lo, n in ranges:
        expected.update(range(lo, lo + n + 1))
    assert parse_cpuset(text) == expected


@pytest.mark.parametrize(("number", "unit", "kib"), [
    (65536, None, 65536), (65536, "KiB", 65536), (64, "M", 65536), (64, "MiB", 65536),
    (67108864, "b", 65536), (67108864, "bytes", 65536), (1, "G", 1048576),
    (1000, "KB", 977), (1, "b", 1), (1025, "bytes", 2),
])
def test_libvirt_sizes_fold_to_kib_rounding_up(number, unit, kib):
    """One rule for every reader of domain XML: round up, so a limit is never lowered."""
    assert kib_from(number, unit) == kib
