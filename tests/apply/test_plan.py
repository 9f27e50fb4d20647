"""plan against the test driver: create, no-op, changes and their modes, foreign, prune."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from virtmix.converge.apply import Context, run_plan
from virtmix.converge.desired import desired_documents
from virtmix.converge.observe import observe_connection
from virtmix.converge.plan import FIELD_MODES, LIVE, RECREATE, RESTART, Options, build_plan
from virtmix.inventory.load import load_site
from virtmix.util.identity import mac_address

PFX = "vmixt-apply-"


def plan_for(path: Path, conn, **opts):
    site = load_site(path)
    domains, networks = desired_documents(site)
    observed = {conn.uri: observe_connection(conn)}
    return site, build_plan(site.name, domains, networks, observed, Options(**opts),
                            set(site.inventory.hosts))


def converge(path: Path, conn, **opts):
    site, plan = plan_for(path, conn, **opts)
    result = run_plan(Context(site, {conn.uri: conn}, jobs=2, opts=Options(**opts)), plan)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    return plan, result


def by_name(plan):
    return {i.name: i for i in plan.items}


def test_new_entries_are_defined_and_started(write_inventory, conn):
    inv = write_inventory(containers={PFX + "c1": {}, PFX + "c2": {"state": "stopped"}})
    _site, plan = plan_for(inv, conn)
    items = by_name(plan)
    assert items[PFX + "c1"].ops == ["prepare", "define", "start"]
    assert items[PFX + "c2"].ops == ["prepare", "define"]
    assert {i.status for i in plan.items} == {"create"}


def test_second_plan_after_apply_is_empty(write_inventory, conn):
    inv = write_inventory(
        containers={PFX + "c1": {"cpu": {"shares": 512, "cpuset": "0"},
                                 "memtune": {"hard_limit": "128MiB"},
                                 "interfaces": [{"network": PFX + "net"}]}},
        networks={PFX + "net": {"host": "h1", "bridge": "vmixtu0", "ipv4": "10.98.0.1/24",
                                "dhcp": True}})
    plan, result = converge(inv, conn)
    assert len(result.changed) == 2
    _site, again = plan_for(inv, conn)
    assert again.pending == [], [(i.name, i.ops, i.changes) for i in again.pending]
    assert {i.status for i in again.items} == {"ok"}


def test_live_change_is_marked_live_and_planned_as_live_op(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {"cpu": {"shares": 512}}}), conn)
    inv = write_inventory(containers={name: {"cpu": {"shares": 2048}}})
    _site, plan = plan_for(inv, conn)
    item = by_name(plan)[name]
    assert [(c.field, c.before, c.after, c.mode) for c in item.changes] == [
        ("cputune.shares", 512, 2048, LIVE)]
    assert item.ops == ["redefine", "live"]
    assert item.live == {"cputune.shares": 2048}
    assert "<shares>2048</shares>" in item.diff and "-    <shares>512</shares>" in item.diff


def test_restart_change_is_reported_not_applied_without_restart(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {}}), conn)
    inv = write_inventory(containers={name: {"memory": "128MiB"}})
    _site, plan = plan_for(inv, conn)
    item = by_name(plan)[name]
    assert [(c.field, c.mode) for c in item.changes] == [("memory_kib", RESTART)]
    assert item.ops == ["redefine"] and item.pending_restart == ["memory_kib"]
    _site, plan = plan_for(inv, conn, restart=True)
    assert by_name(plan)[name].ops == ["redefine", "restart"]


def test_redefine_keeps_uuid_and_macs_of_existing_domain(write_inventory, conn, tree):
    name = PFX + "c1"
    xml = f"""<domain type='lxc'><name>{name}</name>
      <uuid>11111111-2222-3333-4444-555555555555</uuid>
      <metadata><virtmix:entry xmlns:virtmix='https://virtmix.dev/xmlns/domain/1'
        site='unit' name='{name}'/></metadata>
      <memory unit='KiB'>65536</memory>
      <os><type>exe</type><init>/sbin/init</init></os>
      <devices><filesystem type='mount'><source dir='{tree}'/><target dir='/'/></filesystem>
      <interface type='bridge'><mac address='52:54:00:aa:bb:cc'/>
        <source bridge='br9'/><guest dev='eth0'/></interface><console type='pty'/></devices>
      </domain>"""
    conn.define(xml)
    inv = write_inventory(containers={name: {"interfaces": [{"bridge": "br9"}]}})
    _site, plan = plan_for(inv, conn)
    item = by_name(plan)[name]
    assert "11111111-2222-3333-4444-555555555555" in item.xml
    assert "52:54:00:aa:bb:cc" in item.xml
    assert mac_address(conn.uri, name, 0) not in item.xml
    assert "interfaces" not in [c.field for c in item.changes]


def test_explicit_mac_in_inventory_wins(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {"interfaces": [{"bridge": "br9"}]}}), conn)
    inv = write_inventory(containers={name: {"interfaces": [
        {"bridge": "br9", "mac": "52:54:00:01:02:03"}]}})
    item = by_name(plan_for(inv, conn)[1])[name]
    assert [c.field for c in item.changes] == ["interfaces"]
    assert item.changes[0].mode == RESTART
    assert "52:54:00:01:02:03" in item.xml


def test_foreign_domain_is_refused_and_adopt_takes_it_over(write_inventory, conn, tree):
    name = PFX + "foreign"
    conn.define(f"""<domain type='lxc'><name>{name}</name><memory>65536</memory>
      <os><type>exe</type><init>/sbin/init</init></os><devices>
      <filesystem type='mount'><source dir='{tree}'/><target dir='/'/></filesystem>
      <console type='pty'/></devices></domain>""")
    uuid = conn.get(name).uuid
    inv = write_inventory(containers={name: {}})
    item = by_name(plan_for(inv, conn)[1])[name]
    assert item.status == "refuse" and item.ops == []
    assert "not defined by virtmix" in item.reason and "--adopt" in item.reason
    site, plan = plan_for(inv, conn)
    result = run_plan(Context(site, {conn.uri: conn}), plan)
    assert [o.status for o in result.outcomes] == ["failed"]
    assert conn.get(name).metadata is None  # untouched
    adopted = by_name(plan_for(inv, conn, adopt=True)[1])[name]
    assert adopted.status == "update" and adopted.ops[0] == "redefine"
    converge(inv, conn, adopt=True)
    rec = conn.get(name)
    assert rec.metadata["site"] == "unit" and rec.uuid == uuid


def test_other_sites_domain_is_refused(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {}}, name="other"), conn)
    item = by_name(plan_for(write_inventory(containers={name: {}}), conn)[1])[name]
    assert item.status == "refuse" and "site 'other'" in item.reason


def test_prune_only_removes_this_sites_domains(write_inventory, conn):
    keep, gone = PFX + "keep", PFX + "gone"
    converge(write_inventory(containers={keep: {}, gone: {}}), conn)
    inv = write_inventory(containers={keep: {}})
    items = by_name(plan_for(inv, conn)[1])
    assert items[gone].status == "orphan" and items[gone].ops == []
    items = by_name(plan_for(inv, conn, prune=True)[1])
    assert items[gone].status == "remove" and items[gone].ops == ["remove"]
    converge(inv, conn, prune=True)
    assert [d.name for d in conn.list_domains()] == [keep]


def test_foreign_network_is_refused(write_inventory, conn):
    net = PFX + "net"
    conn.define_network(f"<network><name>{net}</name><bridge name='vmixtu1'/></network>")
    inv = write_inventory(networks={net: {"host": "h1", "bridge": "vmixtu1"}})
    item = by_name(plan_for(inv, conn)[1])[net]
    assert item.status == "refuse" and "UUID" in item.reason
    assert by_name(plan_for(inv, conn, adopt=True)[1])[net].status == "update"


def test_stopped_state_stops_a_running_domain(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {}}), conn)
    inv = write_inventory(containers={name: {"state": "stopped"}})
    item = by_name(plan_for(inv, conn)[1])[name]
    assert item.ops == ["stop"]
    converge(inv, conn)
    assert not conn.get(name).active
    assert plan_for(inv, conn)[1].pending == []


def test_guest_gets_its_disk_image_and_converges(write_inventory, conn, tmp_path):
    name = PFX + "g1"
    kernel = tmp_path / "vmlinuz"
    kernel.write_text("k")
    inv = write_inventory(guests={name: {"memory": "256MiB", "disks": [{"size": "16MiB"}],
                                         "boot": {"kernel": str(kernel)}}})
    converge(inv, conn)
    disk = tmp_path / "storage" / "guests" / name / "disk0.qcow2"
    assert disk.is_file() and disk.read_bytes()[:4] == b"QFI\xfb"
    assert plan_for(inv, conn)[1].pending == []


@pytest.mark.parametrize(("field", "mode"), [
    ("cputune.shares", LIVE), ("cputune.quota", LIVE), ("memtune.hard_limit", LIVE),
    ("vcpu_cpuset", LIVE), ("blkio.weight", LIVE), ("memory_kib", RESTART),
    ("interfaces", RESTART), ("filesystems", RESTART), ("idmap", RECREATE),
    ("metadata", LIVE)])
def test_field_modes(field, mode):
    assert FIELD_MODES[field] == mode


def test_nested_containers_wait_for_their_guest_then_are_applied(write_inventory, conn,
                                                                 tmp_path, tree):
    inner = tmp_path / "inner.xml"
    inner.write_text("<node/>\n")
    kernel = tmp_path / "vmlinuz"
    kernel.write_text("k")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    guest, nested = PFX + "g1", PFX + "n1"
    inv = write_inventory(guests={guest: {
        "memory": "256MiB", "boot": {"kernel": str(kernel)}, "lxc_uri": f"test://{inner}",
        "image": {"path": str(base)},
        "containers": {nested: {"rootfs": {"path": str(tree)}, "memory": "64MiB"}}}})
    site, plan = plan_for(inv, conn)
    items = by_name(plan)
    # The guest's own libvirt is not read while the guest does not run.
    assert items[nested].status == "waiting" and items[nested].parent == guest
    assert [i.name for i in plan.items] == [guest, nested]  # dependency order
    ctx = Context(site, {conn.uri: conn}, opts=Options())
    result = run_plan(ctx, plan)
    assert [(o.item.name, o.status) for o in result.outcomes] == [
        (guest, "done"), (nested, "done")], [o.message for o in result.outcomes]
    overlay = tmp_path / "storage" / "guests" / guest / "root.qcow2"
    info = subprocess.run(["qemu-img", "info", str(overlay)], capture_output=True, text=True)
    assert f"backing file: {base}" in info.stdout
    inner_conn = ctx.conns[f"test://{inner}"]
    assert inner_conn.get(nested).active and inner_conn.get(nested).metadata["parent"] == guest


def test_nested_containers_of_a_failed_guest_are_skipped(write_inventory, conn, tmp_path,
                                                         tree):
    guest, nested = PFX + "g1", PFX + "n1"
    inv = write_inventory(guests={guest: {
        "memory": "256MiB", "boot": {"kernel": str(tmp_path / "missing-vmlinuz")},
        "lxc_uri": "test:///default",
        "containers": {nested: {"rootfs": {"path": str(tree)}, "memory": "64MiB"}}}})
    site, plan = plan_for(inv, conn)
    result = run_plan(Context(site, {conn.uri: conn}), plan)
    outcomes = {o.item.name: o for o in result.outcomes}
    assert outcomes[guest].status == "failed" and "does not exist" in outcomes[guest].message
    assert outcomes[nested].status == "skipped"
    assert outcomes[nested].message == f"guest {guest} failed"


def test_restart_flag_restarts_and_converges(write_inventory, conn):
    name = PFX + "c1"
    converge(write_inventory(containers={name: {}}), conn)
    inv = write_inventory(containers={name: {"memory": "128MiB"}})
    converge(inv, conn, restart=True)
    _site, plan = plan_for(inv, conn)
    item = by_name(plan)[name]
    assert item.ops == [] and item.pending_restart == []
    assert conn.get(name).active


def test_built_tree_on_a_remote_host_is_refused_clearly(tmp_path):
    from virtmix.converge.prepare import prepare
    from virtmix.errors import RootfsError

    inv = tmp_path / "remote.yaml"
    inv.write_text(
        "name: r\nhosts:\n  h9:\n    lxc_uri: lxc+ssh://root@hv9.example/system\n"
        "    containers:\n      web: {rootfs: {suite: bookworm}}\n")
    site = load_site(inv)
    with pytest.raises(RootfsError, match="builds trees on the machine it runs on"):
        prepare(site, site.entries[0])
