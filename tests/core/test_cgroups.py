"""The classic cgroup key mapping, table-tested, and the v1/v2 unit conversions."""

import pytest

from virtmix.inventory import cgroups
from virtmix.inventory.cgroups import (
    CgroupKeyError,
    io_weight_to_blkio,
    shares_to_weight,
    suggest_key,
    to_settings,
    weight_to_shares,
)

MiB = 1024 * 1024


@pytest.mark.parametrize("key,value,expected", [
    ("cpuset.cpus", "1,0", {"cpu": {"cpuset": "0-1"}}),
    ("cpu.shares", 2048, {"cpu": {"shares": 2048}}),
    ("cpu.weight", 100, {"cpu": {"shares": 1024}}),
    ("cpu.weight", 10000, {"cpu": {"shares": 102400}}),
    ("cpu.cfs_quota_us", 50000, {"cpu": {"quota": 50000}}),
    ("cpu.cfs_quota_us", -1, {"cpu": {"quota": -1}}),
    ("cpu.cfs_period_us", 100000, {"cpu": {"period": 100000}}),
    ("cpu.max", "20000 100000", {"cpu": {"quota": 20000, "period": 100000}}),
    ("cpu.max", "max", {"cpu": {"quota": -1}}),
    ("memory.limit_in_bytes", 268435456, {"memtune": {"hard_limit": 256 * MiB}}),
    ("memory.limit_in_bytes", "256M", {"memtune": {"hard_limit": 256 * MiB}}),
    ("memory.max", "max", {"memtune": {"hard_limit": None}}),
    ("memory.soft_limit_in_bytes", "128MiB", {"memtune": {"soft_limit": 128 * MiB}}),
    ("memory.high", "64M", {"memtune": {"soft_limit": 64 * MiB}}),
    ("memory.memsw.limit_in_bytes", "1G", {"memtune": {"swap_hard_limit": 1024 * MiB}}),
    ("blkio.weight", 500, {"blkio": {"weight": 500}}),
    ("io.weight", 100, {"blkio": {"weight": 500}}),
    ("io.weight", 1, {"blkio": {"weight": 10}}),
    ("lxc.cgroup.cpu.shares", "2048", {"cpu": {"shares": 2048}}),
    ("lxc.cgroup2.cpu.weight", "50", {"cpu": {"shares": 512}}),
])
def test_key_table(key, value, expected):
    assert to_settings({key: value}) == expected


def test_config_line_form():
    lines = ["lxc.cgroup.cpu.shares = 2048", "lxc.cgroup.cpuset.cpus = 0-1  # pinned"]
    assert to_settings(lines) == {"cpu": {"shares": 2048, "cpuset": "0-1"}}
    assert to_settings("lxc.cgroup.cpu.shares = 2048\n\n# c\nlxc.cgroup.blkio.weight=100\n") \
        == {"cpu": {"shares": 2048}, "blkio": {"weight": 100}}


@pytest.mark.parametrize("key,value,fragment", [
    ("cpu.shares", 1, "between 2 and 262144"),
    ("cpu.shares", 300000, "between 2 and 262144"),
    ("cpu.weight", 0, "between 1 and 10000"),
    ("blkio.weight", 5, "between 10 and 1000"),
    ("cpu.cfs_quota_us", 10, "at least 1000"),
    ("cpu.max", "1 2 3", "QUOTA PERIOD"),
    ("cpuset.cpus", "0-", "not N, N-M"),
    ("memory.limit_in_bytes", "lots", "cannot parse size"),
    ("cpu.shares", "many", "expected an integer"),
])
def test_bad_values(key, value, fragment):
    with pytest.raises(CgroupKeyError, match=fragment):
        to_settings({key: value})


@pytest.mark.parametrize("typo,suggestion", [
    ("cpuset.shares", "cpu.shares"), ("cpu.share", "cpu.shares"),
    ("memory.limit_in_byte", "memory.limit_in_bytes"), ("cpuset.cpu", "cpuset.cpus"),
])
def test_typos_suggest_the_right_key(typo, suggestion):
    assert suggest_key(typo) == suggestion
    with pytest.raises(CgroupKeyError, match=f"did you mean '{suggestion}'"):
        to_settings({typo: 1})


def test_two_keys_for_one_field_conflict():
    with pytest.raises(CgroupKeyError, match="both set cpu.shares"):
        to_settings({"cpu.shares": 1024, "cpu.weight": 100})


@pytest.mark.parametrize("shares,weight", [(2, 1), (1024, 100), (2048, 200), (512, 50),
                                           (262144, 10000), (10, 1)])
def test_shares_to_weight(shares, weight):
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("weight", [1, 7, 33, 100, 999, 5000, 10000])
def test_weight_round_trips_through_shares(weight):
    assert shares_to_weight(weight_to_shares(weight)) == weight


def test_io_weight_default_matches_blkio_default():
    assert io_weight_to_blkio(100) == 500
    assert io_weight_to_blkio(10000) == 1000


def test_every_documented_key_is_in_the_table():
    documented = {"cpuset.cpus", "cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us",
                  "memory.limit_in_bytes", "memory.soft_limit_in_bytes",
                  "memory.memsw.limit_in_bytes", "blkio.weight", "cpu.weight", "cpu.max",
                  "memory.max", "memory.high", "io.weight"}
    assert documented == set(cgroups.CGROUP_KEYS)
