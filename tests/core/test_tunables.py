"""virtmix.domain.tunables: the one description of each setting, and what derives from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from virtmix.converge import live, plan
from virtmix.domain import tunables
from virtmix.domain.tunables import BY_FIELD, BY_INVENTORY, TUNABLES
from virtmix.inventory.cgroups import CGROUP_KEYS
from virtmix.render.explain import explain_entry  # noqa: F401  (imports cleanly)


def test_cgroup_key_table_imports_no_libvirt_lxml_or_render():
    """The inventory's key table reads the tunables without importing anything upward."""
    code = ("import sys, virtmix.inventory.model, virtmix.inventory.cgroups; print(sorted(m for "
            "m in sys.modules if m.startswith(('libvirt', 'lxml', 'virtmix.render', "
            "'virtmix.backend', 'virtmix.converge'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_plan_modes_and_live_parameters_are_the_tables():
    assert plan.FIELD_MODES == {t.field: t.mode("guest") for t in TUNABLES}
    assert list(plan.FIELD_MODES) == [t.field for t in TUNABLES]  # diff order
    assert live.SCHED_PARAMS == {"cputune.shares": "cpu_shares",
                                 "cputune.period": "vcpu_period",
                                 "cputune.quota": "vcpu_quota"}
    assert live.MEMORY_PARAMS == {f"memtune.{k}": k
                                  for k in ("hard_limit", "soft_limit", "swap_hard_limit")}
    assert live.BLKIO_PARAMS == {"blkio.weight": "weight"}


@pytest.mark.parametrize("key", sorted(CGROUP_KEYS))
def test_every_cgroup_key_lands_on_a_row(key):
    spec = CGROUP_KEYS[key]
    if spec.field == "*":
        assert spec.name == "cpu.max"
        return
    row = BY_INVENTORY[(spec.section, spec.field)]
    assert row.field == spec.tunable and key in (k.name for k in row.keys)


@pytest.mark.parametrize(("field", "v1", "v2"), [
    ("cputune.shares", 1024, 100), ("cputune.period", 100000, 100000),
    ("cputune.quota", -1, -1), ("memtune.soft_limit", tunables.UNLIMITED_KIB,
                                tunables.UNLIMITED_KIB),
    ("blkio.weight", None, None),
])
def test_removed_values_per_cgroup_version(field, v1, v2):
    assert tunables.removed_value(field, "container", False) == v1
    assert tunables.removed_value(field, "container", True) == v2


@pytest.mark.parametrize(("field", "element"), [
    ("cputune.shares", "<cputune><shares>"), ("vcpu_cpuset", "<vcpu cpuset=...>"),
    ("memtune.hard_limit", "<memtune><hard_limit>"), ("blkio.weight", "<blkiotune><weight>"),
    ("type", "<domain type=...>"), ("os.machine", "<os><type machine=...>"),
])
def test_element_strings(field, element):
    assert BY_FIELD[field].element == element


def test_shares_convert_only_on_v2():
    assert tunables.to_libvirt("cputune.shares", 2048, True) == 200
    assert tunables.to_libvirt("cputune.shares", 2048, False) == 2048
    assert tunables.from_libvirt("cputune.shares", 200, True) == 2048
    assert tunables.to_libvirt("cputune.quota", 50000, True) == 50000
