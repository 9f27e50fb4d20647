"""Removed and changed limits against the test driver: what a running domain returns to.

The values come from virtmix.domain.tunables: shares go back to 1024 on cgroup v1 but to
weight 100 on v2 (libvirt writes <shares> verbatim to cpu.weight there), a container's hard
memory limit goes back to its `memory:`, and a container's `memory:` changes live where its
limits are kernel cgroups (the real LXC driver: forced here with ObservedDomain.cgroups).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtmix.converge.apply import Context, run_plan
from virtmix.converge.desired import desired_documents
from virtmix.converge.observe import observe_connection, owned_fields
from virtmix.converge.plan import LIVE, RESTART, Options, build_plan, field_mode
from virtmix.domain import tunables
from virtmix.inventory.load import load_site

NAME = "vmixt-limits-c1"
KiB_PER_MiB = 1024


def write(tmp_path: Path, node_uri: str, tree: Path, cgroups: str = "v1", **spec) -> Path:
    entry = {"rootfs": {"path": str(tree)}, "memory": "64MiB", **spec}
    doc = {"name": "limits", "settings": {"storage_dir": str(tmp_path / "storage")},
           "hosts": {"h1": {"uri": node_uri, "lxc_uri": node_uri, "cgroups": cgroups,
                            "containers": {NAME: entry}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def running(conn, name: str) -> int | None:
    """The running domain's value of a field (the test driver keeps it in its live XML)."""
    return owned_fields(conn.live_xml(NAME))[name]


def plan(path: Path, conn, cgroups: bool = False):
    site = load_site(path)
    domains, networks = desired_documents(site)
    observed = {conn.uri: observe_connection(conn)}
    for dom in observed[conn.uri].domains.values():
        dom.cgroups = cgroups
    return site, build_plan(site.name, domains, networks, observed, Options(),
                            set(site.inventory.hosts))


def converge(path: Path, conn, cgroups: bool = False):
    site, p = plan(path, conn, cgroups)
    result = run_plan(Context(site, {conn.uri: conn}, jobs=1, opts=Options()), p)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    return {i.name: i for i in p.items}[NAME]


@pytest.mark.parametrize(("cgroups", "default"), [("v1", 1024), ("v2", 100)])
def test_removed_shares_return_to_the_default_of_the_cgroup_version(
        tmp_path, node_uri, tree, conn, cgroups, default):
    converge(write(tmp_path, node_uri, tree, cgroups, cpu={"shares": 2048}), conn)
    # On v2 the definition holds the weight: 2048 shares = cpu.weight 200.
    assert running(conn, "cputune.shares") == (200 if cgroups == "v2" else 2048)
    # The test driver cannot set scheduler parameters live: plan only (tests/live/
    # test_nesting.py applies it to a container nested in a guest, a real v2 host).
    _site, p = plan(write(tmp_path, node_uri, tree, cgroups), conn)
    item = {i.name: i for i in p.items}[NAME]
    assert item.live == {"cputune.shares": default} and item.ops == ["redefine", "live"]


def test_nested_containers_are_on_v2_whatever_the_host_says():
    from virtmix.render.views import cgroup_version

    class E:  # only what cgroup_version reads
        parent, host = "g1", "h1"

    assert cgroup_version(None, E()) == "v2"
    assert tunables.removed_value("cputune.shares", "container", True) == 100


def test_removed_hard_limit_returns_to_memory_not_unlimited(tmp_path, node_uri, tree, conn):
    converge(write(tmp_path, node_uri, tree, memtune={"hard_limit": "48MiB"}), conn)
    assert running(conn, "memtune.hard_limit") == 48 * KiB_PER_MiB
    item = converge(write(tmp_path, node_uri, tree), conn)
    assert item.live == {"memtune.hard_limit": 64 * KiB_PER_MiB}
    assert running(conn, "memtune.hard_limit") == 64 * KiB_PER_MiB


def test_removed_hard_limit_of_a_real_container_also_returns_to_memory(
        tmp_path, node_uri, tree, conn):
    converge(write(tmp_path, node_uri, tree, memtune={"hard_limit": "48MiB"}), conn, True)
    item = converge(write(tmp_path, node_uri, tree), conn, cgroups=True)
    assert item.live == {"memtune.hard_limit": 64 * KiB_PER_MiB}
    _site, again = plan(write(tmp_path, node_uri, tree), conn, cgroups=True)
    assert again.pending == [], [(i.ops, i.live) for i in again.pending]


def test_container_memory_changes_live_where_limits_are_cgroups(tmp_path, node_uri, tree, conn):
    converge(write(tmp_path, node_uri, tree), conn, cgroups=True)
    item = converge(write(tmp_path, node_uri, tree, memory="96MiB"), conn, cgroups=True)
    assert [(c.field, c.mode) for c in item.changes] == [("memory_kib", LIVE)]
    assert item.pending_restart == [] and item.ops == ["redefine", "live"]
    assert item.live == {"memtune.hard_limit": 96 * KiB_PER_MiB}
    assert running(conn, "memtune.hard_limit") == 96 * KiB_PER_MiB
    assert "<memory unit='KiB'>98304</memory>" in conn.get(NAME).xml  # persistent too
    _site, again = plan(write(tmp_path, node_uri, tree, memory="96MiB"), conn, cgroups=True)
    assert again.pending == []
    # With a hard limit set, `memory:` changes nothing live: the hard limit is the limit.
    converge(write(tmp_path, node_uri, tree, memory="96MiB", memtune={"hard_limit": "80MiB"}),
             conn, cgroups=True)
    item = converge(write(tmp_path, node_uri, tree, memory="112MiB",
                          memtune={"hard_limit": "80MiB"}), conn, cgroups=True)
    assert item.live == {}


def test_guest_memory_is_restart_and_its_removed_hard_limit_unlimited():
    assert field_mode("memory_kib", "guest") == RESTART
    assert field_mode("memory_kib", "container") == LIVE
    assert field_mode("memory_kib", "container", cgroups=False) == RESTART
    want = {"memory_kib": 65536}
    assert tunables.removed_value("memtune.hard_limit", "guest", False, want) == \
        tunables.UNLIMITED_KIB
    assert tunables.removed_value("memtune.hard_limit", "container", True, want) == 65536


@pytest.mark.parametrize("row", tunables.TUNABLES, ids=lambda r: r.field)
def test_every_live_parameter_row_says_what_removal_means(row):
    """A row with a plain live API either returns to a value or says it is left alone."""
    if row.api and row.field != "blkio.weight":
        assert row.removed_v1 is not None and row.removed_v2 is not None
    assert row.mode("container") in (LIVE, RESTART, "recreate")
