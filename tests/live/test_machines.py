"""Issue 15 against the real libvirtd: saved plans, plan JSON schema, completion, metrics,
drift events (busybox containers named vmixt-mach-*)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from apply_helpers import (
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)

pytestmark = pytest.mark.live
PFX = "vmixt-mach-"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas/plan-v1.json").read_text())


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def state(lxc_conn, name: str) -> int:
    return lxc_conn.lookupByName(name).state()[0]


def test_saved_plan_on_the_real_daemon(lxc_conn, storage, busybox_tree):
    a, b = PFX + "a", PFX + "b"
    hosts = {"h1": lxc_host({a: busybox(busybox_tree), b: busybox(busybox_tree)})}
    inv = str(write_inventory(storage, hosts, name="vmixt-mach-site"))
    plan = storage / "create.plan"
    virtmix("plan", inv, "--out", str(plan), check=10)
    jsonschema.validate(json.loads(plan.read_text()), SCHEMA)
    jsonschema.validate(json.loads(virtmix("plan", inv, "-o", "json", check=10).stdout),
                        SCHEMA)
    virtmix("apply", str(plan), check=0)
    assert state(lxc_conn, a) == 1 and state(lxc_conn, b) == 1
    # Now a change is planned and saved, then b is stopped behind virtmix's back.
    hosts["h1"]["containers"][a]["cpu"] = {"shares": 256}
    write_inventory(storage, hosts, name="vmixt-mach-site")
    plan2 = storage / "shares.plan"
    virtmix("plan", inv, "--out", str(plan2), check=10)
    subprocess.run(["virsh", "-c", "lxc:///system", "destroy", b], check=True,
                   capture_output=True)
    res = virtmix("apply", str(plan2), check=13)
    assert f"Saved plan {plan2} is stale: domain {b} on lxc:///system changed" in res.stderr
    assert "<shares>256</shares>" not in lxc_conn.lookupByName(a).XMLDesc(0)
    # A fresh plan applies; a plan of nothing is a no-op.
    virtmix("plan", inv, "--out", str(plan2), check=10)
    virtmix("apply", str(plan2), check=0)
    assert "<shares>256</shares>" in lxc_conn.lookupByName(a).XMLDesc(0)
    assert state(lxc_conn, b) == 1
    virtmix("plan", inv, "--out", str(plan2), check=0)
    pid = lxc_conn.lookupByName(a).ID()
    res = virtmix("apply", str(plan2), check=0)
    assert "nothing to do" in res.stdout and lxc_conn.lookupByName(a).ID() == pid
    # The inventory edited after the plan: stale.
    Path(inv).write_text(Path(inv).read_text() + "# edited\n")
    res = virtmix("apply", str(plan2), check=13)
    assert f"the inventory {Path(inv).resolve()} changed" in res.stderr
