"""Placement through the CLI: several test:///PATH node files, one "host" each.

libvirt's test driver reads each node file afresh at every open (its state dies with the
connection), so a domain "already placed" is written into the node file itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.converge.apply import close_all
from virtmix.converge.desired import desired_documents
from virtmix.converge.placement import observe_and_place
from virtmix.domain import metadata
from virtmix.domain.xmlnode import parse
from virtmix.inventory.load import load_site
from virtmix.util.identity import VIRTMIX_NS

SITE = "plc"
GIB = 1024 * 1024


def node_file(path: Path, memory_gib: float, cpus: int = 4, domains: str = "") -> str:
    path.write_text(
        f"<node><cpu><mhz>2000</mhz><model>t</model><active>{cpus}</active>"
        f"<total>{cpus}</total><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
        f"<threads>1</threads></cpu><memory>{int(memory_gib * GIB)}</memory>"
        f"{domains}</node>\n")
    return f"test://{path}"


def placed_domain(name: str, host: str, inventory: Path, memory_mib: int = 512) -> str:
    """A domain this site placed on `host` earlier, as its node file holds it."""
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory>"
            "<os><type>exe</type><init>/sbin/init</init></os>"
            f"<metadata><virtmix:entry xmlns:virtmix='{VIRTMIX_NS}' "
            f"site='{SITE}' inventory='{inventory}' host='{host}' name='{name}' "
            "kind='container' placed='spread'/></metadata></domain>")


@pytest.fixture
def site(tmp_path: Path, tree: Path, monkeypatch):
    """site(hosts={name: (memory GiB, extra host keys)}, containers={...}) -> path."""
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(tmp_path / "locks"))

    def write(hosts: dict, containers: dict, domains: dict | None = None, **top) -> Path:
        inv = tmp_path / "site.yaml"
        hs = {}
        for hname, (mem, extra) in hosts.items():
            uri = extra.pop("uri", None) or node_file(tmp_path / f"{hname}.xml", mem,
                                                      domains=(domains or {}).get(hname, ""))
            hs[hname] = {"uri": uri, "lxc_uri": uri, "virt_type": "qemu", **extra}
        cs = {n: {"rootfs": {"path": str(tree)}, "memory": "512MiB", **spec}
              for n, spec in containers.items()}
        doc = {"name": SITE, "settings": {"storage_dir": str(tmp_path / "storage")},
               "hosts": hs, "containers": cs, **top}
        inv.write_text(yaml.safe_dump(doc, sort_keys=False))
        return inv

    return write


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_plan_places_new_entries_and_says_why(site):
    inv = str(site({"hv1": (1, {}), "hv2": (3, {}), "hv3": (2, {"group": "rack1"})},
                   {"web1": {"host": "auto"}, "web2": {"group": "rack1"},
                    "web3": {"hosts": ["hv1", "hv2"], "placement": "pack"}}))
    res = run("plan", inv)
    assert res.exit_code == 10, res.output
    assert "+ container web1 on hv2 (test://" in res.output
    assert "(placed: spread, most free memory 3GiB): create" in res.output
    assert "+ container web2 on hv3" in res.output
    assert "container web3 on hv1" in res.output and "placed: pack, fullest host" in res.output
    data = json.loads(run("plan", inv, "-o", "json").stdout)
    got = {i["name"]: i["placement"] for i in data["items"]}
    assert got["web1"] == {"host": "hv2", "policy": "spread",
                           "reason": "placed: spread, most free memory 3GiB"}
    assert got["web3"]["policy"] == "pack" and got["web3"]["host"] == "hv1"


def test_settings_policy_and_anti_affinity(site):
    inv = site({"hv1": (4, {}), "hv2": (4, {})},
               {"db1": {"anti_affinity": "db"}, "db2": {"anti_affinity": "db"}, "app": {}})
    doc = yaml.safe_load(inv.read_text())
    doc["settings"]["placement"] = "pack"
    inv.write_text(yaml.safe_dump(doc))
    data = json.loads(run("plan", str(inv), "-o", "json").stdout)
    hosts = {i["name"]: i["host"] for i in data["items"]}
    assert hosts == {"db1": "hv1", "db2": "hv2", "app": "hv1"}  # pack; db members apart


def test_existing_placements_are_kept_and_recorded(site, tmp_path):
    inv_path = tmp_path / "site.yaml"
    # web1 lives on the small host hv1; spread would now choose hv2. It must stay.
    inv = str(site({"hv1": (1, {}), "hv2": (8, {})},
                   {"web1": {"anti_affinity": "web"}, "web2": {"anti_affinity": "web"}},
                   domains={"hv1": placed_domain("web1", "hv1", inv_path)}))
    data = json.loads(run("plan", inv, "-o", "json", "--no-diff").stdout)
    items = {i["name"]: i for i in data["items"]}
    assert items["web1"]["host"] == "hv1" and items["web1"]["placement"] is None
    assert items["web1"]["status"] != "create"
    assert items["web2"]["host"] == "hv2"  # hv1 holds web1 of anti_affinity web
    # What apply defines carries the placement in its metadata.
    placed, conns, _read = observe_and_place(load_site(inv))
    close_all(conns)
    docs, _nets = desired_documents(placed)
    meta = {d.entry.name: metadata.read(parse(d.xml)) for d in docs}
    assert meta["web2"]["host"] == "hv2" and meta["web2"]["placed"] == "spread"
    assert meta["web1"]["host"] == "hv1" and meta["web1"]["placed"] == "spread"


def test_no_host_fits_is_an_inventory_error_naming_the_constraint(site):
    inv = str(site({"hv1": (1, {}), "hv2": (2, {})}, {"big": {"memory": "4GiB"}}))
    res = run("plan", inv)
    assert res.exit_code == 3, res.output
    assert "containers.big" in res.output
    assert "no host satisfies memory 4GiB for big" in res.output
    assert "hv1: full: 1GiB free" in res.output and "Traceback" not in res.output


def test_max_domains_and_cpuset_checked_against_the_chosen_host(site):
    inv = str(site({"hv1": (8, {"max_domains": 1}), "hv2": (2, {"cpus": "0-7"})},
                   {"a": {}, "b": {}, "pinned": {"cpu": {"cpuset": "6-7"}}}))
    data = json.loads(run("plan", inv, "-o", "json").stdout)
    assert {i["name"]: i["host"] for i in data["items"]} == {"a": "hv1", "b": "hv2",
                                                             "pinned": "hv2"}
    inv = str(site({"hv1": (8, {})}, {"pinned": {"cpu": {"cpuset": "6"}}}))
    res = run("plan", inv)
    assert res.exit_code == 3 and "no host satisfies cpuset 6" in res.output


def test_unreachable_host_is_skipped_or_reported(site, tmp_path):
    gone = f"test://{tmp_path}/missing-node.xml"
    inv = str(site({"down": (8, {"uri": gone}), "hv1": (1, {})}, {"web": {}}))
    res = run("plan", inv)
    assert res.exit_code == 10, res.output
    assert "container web on hv1" in res.output and "not down: unreachable" in res.output
    inv = str(site({"down": (8, {"uri": gone})}, {"web": {}}))
    res = run("plan", inv)
    assert res.exit_code == 5 and "cannot place containers.web" in res.output


def test_apply_defines_each_entry_on_its_host(site):
    inv = str(site({"hv1": (2, {}), "hv2": (4, {})}, {"a": {}, "b": {}, "c": {}}))
    res = run("--quiet", "apply", inv, "--yes")
    assert res.exit_code == 0, res.output
    assert "3 changed, 0 failed" in res.output


@pytest.mark.parametrize("containers,hosts_extra,message", [
    ({"x": {"hosts": ["nope"]}}, {}, "'nope' is neither a host nor a host group"),
    ({"x": {"group": "rack9"}}, {"group": "rack1"}, "'rack9' is neither a host nor a host"),
    ({"x": {"host": "hv1", "group": "rack1"}}, {"group": "rack1"}, "not host and group"),
    ({"x": {"placement": "random"}}, {}, "placement"),
])
def test_bad_placement_keys_are_inventory_errors(site, containers, hosts_extra, message):
    inv = str(site({"hv1": (1, hosts_extra)}, containers))
    res = run("validate", inv)
    assert res.exit_code == 3, res.output
    assert message in res.output


def test_placement_keys_on_a_fixed_entry_and_name_clashes(site, tmp_path, tree):
    inv = site({"hv1": (1, {})}, {"web": {}})
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["hv1"]["containers"] = {"fixed": {"rootfs": {"path": str(tree)},
                                                   "host": "auto"}}
    inv.write_text(yaml.safe_dump(doc))
    res = run("validate", str(inv))
    assert res.exit_code == 3 and "hosts.hv1.containers.fixed.host" in res.output
    doc["hosts"]["hv1"]["containers"] = {"web": {"rootfs": {"path": str(tree)}}}
    inv.write_text(yaml.safe_dump(doc))
    res = run("validate", str(inv))
    assert res.exit_code == 3 and "name 'web' is also used at hosts.hv1.containers.web" \
        in res.output


def test_a_placed_guest_takes_its_containers_along(site, tmp_path, tree):
    inv = site({"hv1": (1, {}), "hv2": (8, {})}, {})
    doc = yaml.safe_load(inv.read_text())
    doc["guests"] = {"g1": {"host": "auto", "memory": "2GiB", "virt_type": "qemu",
                            "disks": [{"path": str(tmp_path / "g1.qcow2")}],
                            "lxc_uri": f"test://{tmp_path}/inside-g1.xml",
                            "containers": {"c1": {"rootfs": {"path": str(tree)}}}}}
    inv.write_text(yaml.safe_dump(doc))
    data = json.loads(run("plan", str(inv), "-o", "json").stdout)
    items = {i["name"]: i for i in data["items"]}
    assert items["g1"]["host"] == "hv2" and items["g1"]["placement"]["policy"] == "spread"
    assert items["c1"]["host"] == "hv2" and items["c1"]["status"] == "waiting"


def test_fixed_entries_take_capacity_and_bind_anti_affinity(site, tree):
    inv = site({"hv1": (2, {}), "hv2": (1, {}), "hv3": (4, {})},
               {"web": {}, "db2": {"anti_affinity": "db", "hosts": ["hv1", "hv3"],
                                  "memory": "128MiB"}})
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["hv1"]["containers"] = {"big": {"rootfs": {"path": str(tree)},
                                                 "memory": "1792MiB"}}
    doc["hosts"]["hv3"]["containers"] = {"db1": {"rootfs": {"path": str(tree)},
                                                 "memory": "3584MiB", "anti_affinity": "db"}}
    inv.write_text(yaml.safe_dump(doc))
    res = run("plan", str(inv), "-o", "json")
    assert res.exit_code == 10, res.output
    hosts = {i["name"]: i["host"] for i in json.loads(res.stdout)["items"]}
    # hv3 has 512MiB left, hv1 256MiB, hv2 1GiB: web goes to hv2; db2 may not join db1.
    assert hosts["web"] == "hv2" and hosts["db2"] == "hv1"
