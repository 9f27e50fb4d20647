"""Nested names (GUEST/NAME) through an inventory: the guest's libvirt is reached by the URI
the inventory gives it. Here that URI is this host's own LXC driver under another spelling
(lxc+unix:///system), so the path from inventory to connection is exercised for real
without booting a guest that runs libvirt (the nesting tests do that)."""

from __future__ import annotations

import json

import yaml
from admin_helpers import LXC, PFX, assert_clean_error, virsh, vm
from support import busybox_lxc_xml

from virtmix.hosts.cgroupfs import cgroup_version

NEST_URI = "lxc+unix:///system"
NAME = PFX + "nested"


def test_inventory_reaches_containers_through_their_guest(lxc_conn, busybox_tree,
                                                          domain_cleanup, tmp_path):
    domain_cleanup(lxc_conn, NAME)
    (tmp_path / "d.xml").write_text(busybox_lxc_xml(NAME, busybox_tree))
    virsh(LXC, "define", str(tmp_path / "d.xml"))
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump({"hosts": {"hv9": {
        "uri": "qemu:///system", "lxc_uri": LXC, "virt_type": "qemu",
        "guests": {"g9": {"lxc_uri": NEST_URI, "memory": "256MiB", "containers": {
            NAME: {"rootfs": {"path": str(busybox_tree)}}}}}}}}))
    rows = json.loads(vm("-i", str(inv), "ls", "-o", "json").stdout)
    nested = [r for r in rows if r["name"] == NAME and r["uri"] == NEST_URI]
    assert nested and nested[0]["parent"] == "g9" and nested[0]["host"] == "hv9"
    direct = [r for r in rows if r["name"] == NAME and r["uri"] == LXC]
    assert direct and direct[0]["parent"] is None and direct[0]["host"] == "hv9"

    data = json.loads(vm("-i", str(inv), "info", f"g9/{NAME}", "-o", "json").stdout)
    assert (data["name"], data["uri"], data["parent"]) == (f"g9/{NAME}", NEST_URI, "g9")
    # Inside a virtmix guest cgroups are v2 (virtmix.render.views.cgroup_version): shares are
    # written as the equivalent cpu.weight, as the core renders them.
    vm("-i", str(inv), "cgroup", f"g9/{NAME}", "cpu.shares", "600")
    assert "<shares>59</shares>" in virsh(LXC, "dumpxml", "--inactive", NAME)
    # ls, info and cgroup say it in v1 units too (the weight's nearest: 59 -> 604), info
    # beside the weight libvirt holds; the host's own (v1) row shows libvirt's number.
    rows = json.loads(vm("-i", str(inv), "ls", "-o", "json").stdout)
    direct = 604 if cgroup_version() == "v2" else 59
    assert {r["uri"]: r["shares"] for r in rows if r["name"] == NAME} == {NEST_URI: 604,
                                                                          LXC: direct}
    data = json.loads(vm("-i", str(inv), "info", f"g9/{NAME}", "-o", "json").stdout)
    assert data["cputune"] == {"shares": 604, "cpu_weight": 59}, data["cputune"]
    assert vm("-i", str(inv), "cgroup", f"g9/{NAME}", "cpu.shares").stdout.strip() == "604"
    assert_clean_error(vm("-i", str(inv), "info", f"g9/{PFX}none", check=None), 6,
                       f"no domain named '{PFX}none' on {NEST_URI}")
    assert_clean_error(vm("info", f"g9/{NAME}", check=None), 2, "needs the inventory")
