"""The `cgroup` verb's values: libvirt's parameters shown in each key's own unit (table test).

libvirt reports <shares>/cpu_shares verbatim: a cgroup v1 share, or a v2 weight where the
domain runs on cgroup v2; the verb shows every key in its own unit on both.
"""

from __future__ import annotations

import pytest

from virtmix.admin.cgroup_verbs import _format, _params, key_spec
from virtmix.domain.tunables import UNLIMITED_KIB


@pytest.mark.parametrize(("key", "reported", "v2", "shown"), [
    ("cpu.shares", {"shares": 512}, False, "512"),
    ("cpu.shares", {"shares": 50}, True, "512"),
    ("cpu.weight", {"shares": 512}, False, "50"),
    ("cpu.weight", {"shares": 50}, True, "50"),
    ("cpu.shares", {"shares": 0}, False, "default"),
    ("cpu.cfs_quota_us", {"quota": -1, "period": 0, "shares": 0}, False, "-1"),
    ("cpu.cfs_period_us", {"quota": 0, "period": 0, "shares": 0}, False, "default"),
    ("cpu.max", {"quota": -1, "period": 0, "shares": 0}, False, "max 100000"),
    ("cpu.max", {"quota": 50000, "period": 200000, "shares": 0}, True, "50000 200000"),
    ("memory.max", {"hard_limit": UNLIMITED_KIB}, False, "max"),
    ("memory.limit_in_bytes", {"hard_limit": 65536}, False, str(64 * 2**20)),
    ("memory.high", {"soft_limit": 1024}, True, str(2**20)),
    ("blkio.weight", {"weight": 500}, False, "500"),
    ("io.weight", {"weight": 500}, False, "100"),
    ("io.weight", {"weight": 0}, False, "default"),
])
def test_reported_values_in_each_keys_unit(key, reported, v2, shown):
    assert _format(key_spec(key), reported, v2) == shown


@pytest.mark.parametrize(("key", "value", "v2", "params"), [
    ("cpu.shares", "2048", False, ("sched", {"cpu_shares": 2048})),
    ("cpu.shares", "2048", True, ("sched", {"cpu_shares": 200})),
    ("cpu.weight", "200", True, ("sched", {"cpu_shares": 200})),
    ("cpu.max", "max", False, ("sched", {"vcpu_quota": -1})),
    ("memory.max", "max", True, ("memory", {"hard_limit": UNLIMITED_KIB})),
    ("memory.limit_in_bytes", "64M", False, ("memory", {"hard_limit": 65536})),
    ("io.weight", "100", False, ("blkio", {"weight": 500})),
])
def test_values_set_become_libvirt_parameters(key, value, v2, params):
    assert _params(key_spec(key), value, v2) == params
