"""Ownership per site: networks and domains belong to the site's name, never to its path."""

from __future__ import annotations

import shutil

import yaml

from apply.test_plan import PFX, by_name, converge, plan_for
from virtmix.inventory.load import load_site
from virtmix.util.identity import legacy_network_uuid, network_uuid

NET = {"host": "h1", "bridge": "vmixtu5", "ipv4": "10.97.0.1/24"}


def test_two_sites_with_the_same_host_name_do_not_see_each_others_networks(
        write_inventory, conn, tmp_path):
    # Site "alpha" makes a network on its host h1; site "beta" also calls its host h1.
    alpha = write_inventory(networks={PFX + "anet": NET}, name="alpha")
    converge(alpha, conn)
    beta_doc = yaml.safe_load(alpha.read_text())
    beta_doc["name"] = "beta"
    beta_doc["networks"] = {PFX + "bnet": {**NET, "bridge": "vmixtu6",
                                           "ipv4": "10.97.1.1/24"}}
    beta = tmp_path / "beta.yaml"
    beta.write_text(yaml.safe_dump(beta_doc))
    _site, plan = plan_for(beta, conn, prune=True)
    items = by_name(plan)
    assert PFX + "anet" not in items, "beta must not list alpha's network (orphan or remove)"
    assert items[PFX + "bnet"].status == "create"
    # alpha still sees its own network as in sync, and --prune of alpha (network removed
    # from its file) does list it.
    assert by_name(plan_for(alpha, conn)[1])[PFX + "anet"].status == "ok"
    empty = write_inventory(networks={}, name="alpha")
    items = by_name(plan_for(empty, conn, prune=True)[1])
    assert items[PFX + "anet"].status == "remove"


def test_another_sites_network_of_the_same_name_is_refused(write_inventory, conn, tmp_path):
    converge(write_inventory(networks={PFX + "net": NET}, name="alpha"), conn)
    beta = write_inventory(networks={PFX + "net": NET}, name="beta")
    item = by_name(plan_for(beta, conn)[1])[PFX + "net"]
    assert item.status == "refuse" and "site 'beta'" in item.reason


def test_a_network_made_before_sites_owned_networks_is_kept_but_never_pruned(
        write_inventory, conn):
    name = PFX + "old"
    conn.define_network(f"<network><name>{name}</name><uuid>{legacy_network_uuid('h1', name)}"
                        "</uuid><bridge name='vmixtu7'/></network>")
    inv = write_inventory(networks={name: {"host": "h1", "bridge": "vmixtu7"}})
    assert by_name(plan_for(inv, conn)[1])[name].status in ("ok", "update")
    gone = write_inventory(networks={})
    assert name not in by_name(plan_for(gone, conn, prune=True)[1])


def test_site_key_names_the_site_and_old_name_key_still_works(tmp_path):
    path = tmp_path / "file-stem.yaml"
    path.write_text("site: prod\nhosts: {}\n")
    assert load_site(path).name == "prod"
    path.write_text("name: legacy\nhosts: {}\n")
    assert load_site(path).name == "legacy"
    path.write_text("hosts: {}\n")
    assert load_site(path).name == "file-stem"
    assert network_uuid("a", "local", "n") != network_uuid("b", "local", "n")


def test_moving_the_inventory_file_changes_nothing(write_inventory, conn, tmp_path):
    inv = write_inventory(containers={PFX + "c1": {}}, networks={PFX + "net": NET},
                          name="unit")
    converge(inv, conn)
    moved_dir = tmp_path / "elsewhere"
    moved_dir.mkdir()
    moved = moved_dir / "site.yaml"
    shutil.move(inv, moved)
    _site, plan = plan_for(moved, conn)
    assert plan.pending == [], [(i.name, i.changes) for i in plan.pending]
    # The path stays in the metadata as information.
    assert conn.get(PFX + "c1").metadata["inventory"] == str(inv)


def test_import_keeps_the_site_host_names_and_network_ownership(write_inventory, conn,
                                                                 node_uri, tmp_path):
    from virtmix.admin import importer
    from virtmix.admin.targets import Session

    net = PFX + "net"
    inv = write_inventory(containers={PFX + "c1": {"interfaces": [{"network": net}]}},
                          networks={net: NET}, name="alpha")
    converge(inv, conn)
    session = Session(connect=node_uri)
    session._conns[node_uri] = conn  # the test driver's state lives in this connection
    host, uri, lxc_uri, items = importer.collect(session, None, [], False)
    assert host == "h1"  # not `localhost`
    notes = [n for i in items for n in i.notes]
    assert any("site 'alpha'" in n for n in notes) and not any("None" in n for n in notes)
    doc = importer.inventory_document(host, uri, lxc_uri, "v1", items,
                                      site=importer.described_owner(items)[0])
    assert doc["site"] == "alpha" and list(doc["hosts"]) == ["h1"]
    doc["settings"] = {"storage_dir": str(tmp_path / "storage")}
    doc["hosts"]["h1"].update(uri=node_uri, lxc_uri=node_uri)  # test:// has no driver pair
    imported = tmp_path / "imported.yaml"
    imported.write_text(yaml.safe_dump(doc, sort_keys=False))
    items_by = by_name(plan_for(imported, conn)[1])
    assert items_by[net].status == "ok", items_by[net].reason  # still "defined by virtmix"
    assert items_by[PFX + "c1"].status != "refuse", items_by[PFX + "c1"].reason
