"""plan / apply / destroy against the real libvirtd with busybox containers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import libvirt
import pytest
from apply_helpers import (
    PFX,
    busybox,
    cgroup_dir,
    lxc_host,
    make_storage_dir,
    names_with_prefix,
    remove_storage_dir,
    virtmix,
    virtmix_argv,
    write_inventory,
)
from support import busybox_lxc_xml, container_init_pid, lxc_run, wait_for

pytestmark = pytest.mark.live


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)  # registered first: domains go before their trees
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def wait_init(name: str) -> None:
    wait_for(lambda: lxc_run(name, ["cat", "/run/virtmix-init-done"]).stdout.strip() == "up",
             timeout=15, what=f"busybox init of {name}")


def test_apply_plan_idempotent_destroy(lxc_conn, storage, busybox_tree, busybox_tree_idmap):
    priv, unpriv = PFX + "priv", PFX + "unpriv"
    inv = str(write_inventory(storage, {"h1": lxc_host({
        priv: busybox(busybox_tree, cpu={"shares": 512}),
        unpriv: busybox(busybox_tree_idmap, privileged=False)})}))
    res = virtmix("plan", inv, check=10)
    assert "2 to create" in res.stdout
    virtmix("apply", inv, "--yes", check=0)
    for name in (priv, unpriv):
        wait_init(name)
    assert lxc_run(unpriv, ["cat", "/proc/self/uid_map"]).stdout.split() == [
        "0", "100000", "65536"]
    inactive = lxc_conn.lookupByName(priv).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<shares>512</shares>" in inactive and "virtmix:entry" in inactive

    res = virtmix("plan", inv, check=0)
    assert "nothing to do (2 up to date)" in res.stdout
    data = json.loads(virtmix("plan", inv, "-o", "json", check=0).stdout)
    assert data["pending"] == 0 and {i["status"] for i in data["items"]} == {"ok"}
    res = virtmix("apply", inv, "--yes", check=0)
    assert "nothing to do" in res.stdout
    pid = container_init_pid(priv)
    virtmix("apply", inv, "--yes", check=0)
    assert container_init_pid(priv) == pid  # an idle apply restarts nothing

    virtmix("destroy", inv, "--yes", check=0)
    assert names_with_prefix(lxc_conn) == []
    assert busybox_tree.is_dir()  # a given tree is the admin's: never deleted


def test_live_update_without_restart(lxc_conn, storage, busybox_tree):
    name = PFX + "live"
    spec = {"cpu": {"shares": 512, "cpuset": "0"}, "memtune": {"hard_limit": "128MiB"}}
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree, **spec)})}))
    virtmix("apply", inv, "--yes", check=0)
    wait_init(name)
    pid = container_init_pid(name)
    dom_id = lxc_conn.lookupByName(name).ID()
    assert (cgroup_dir("cpu", dom_id) / "cpu.shares").read_text().strip() == "512"

    spec = {"cpu": {"shares": 2048, "cpuset": "1"}, "memtune": {"hard_limit": "256MiB"}}
    write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree, **spec)})})
    res = virtmix("plan", inv, check=10)
    assert "cputune.shares: 512 -> 2048  [live]" in res.stdout
    assert "vcpu_cpuset: 0 -> 1  [live]" in res.stdout
    assert "memtune.hard_limit: 128MiB -> 256MiB  [live]" in res.stdout
    virtmix("apply", inv, "--yes", check=0)

    assert container_init_pid(name) == pid, "a live change must not restart the container"
    assert (cgroup_dir("cpu", dom_id) / "cpu.shares").read_text().strip() == "2048"
    assert (cgroup_dir("cpuset", dom_id) / "cpuset.cpus").read_text().strip() == "1"
    limit = (cgroup_dir("memory", dom_id) / "memory.limit_in_bytes").read_text().strip()
    assert int(limit) == 256 * 1024 * 1024
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Cpus_allowed_list:\t1\n" in status  # the container's init moved to CPU 1
    inactive = lxc_conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<shares>2048</shares>" in inactive
    assert "cpuset='1'" in inactive
    assert "<hard_limit unit='KiB'>262144</hard_limit>" in inactive
    virtmix("plan", inv, check=0)


def test_foreign_domain_is_protected_and_adopt_takes_it_over(lxc_conn, storage, busybox_tree):
    name, other = PFX + "foreign", PFX + "mine"
    dom = lxc_conn.defineXMLFlags(busybox_lxc_xml(name, busybox_tree),
                                  libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    uuid, before = dom.UUIDString(), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    inv = str(write_inventory(storage, {"h1": lxc_host({
        name: busybox(busybox_tree), other: busybox(busybox_tree)})}))
    res = virtmix("plan", inv, check=9)
    assert f"domain {name} on lxc:///system exists and was not defined by virtmix" in res.stdout
    res = virtmix("apply", inv, "--yes", check=11)
    assert "1 of 2 entries failed" in res.stderr and "--adopt" in res.stderr
    assert lxc_conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    assert lxc_conn.lookupByName(other).isActive()  # the other entry went on
    res = virtmix("destroy", name, "--yes", check=9)
    assert lxc_conn.lookupByName(name)

    virtmix("apply", inv, "--yes", "--adopt", check=0)
    adopted = lxc_conn.lookupByName(name)
    assert adopted.UUIDString() == uuid and adopted.isActive()
    assert "virtmix:entry" in adopted.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    virtmix("plan", inv, check=0)


def test_two_applies_at_once(lxc_conn, storage, busybox_tree):
    names = [f"{PFX}pair{i}" for i in range(6)]
    inv = str(write_inventory(storage, {"h1": lxc_host({n: busybox(busybox_tree)
                                                         for n in names})}))
    procs = [subprocess.Popen(virtmix_argv("apply", inv, "--yes"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("waiting for" in err for _out, err in outputs), outputs
    assert sum("nothing to do" in out for out, _err in outputs) == 1, outputs
    assert names_with_prefix(lxc_conn) == sorted(names)
    assert all(lxc_conn.lookupByName(n).isActive() for n in names)
    virtmix("plan", inv, check=0)


def test_unsearchable_parent_is_named(lxc_conn, storage, make_busybox_tree):
    tree = make_busybox_tree(shift=100000)
    tree.parent.chmod(0o700)
    name = PFX + "denied"
    inv = str(write_inventory(storage, {"h1": lxc_host({
        name: busybox(tree, privileged=False)})}))
    res = virtmix("apply", inv, "--yes", check=11)
    assert f"{tree.parent} is not searchable by uid 100000" in res.stderr
    assert names_with_prefix(lxc_conn) == []  # nothing defined half-way
    tree.parent.chmod(0o755)
    virtmix("apply", inv, "--yes", check=0)
    wait_init(name)


def test_prune_removes_what_left_the_inventory(lxc_conn, storage, busybox_tree):
    keep, gone = PFX + "keep", PFX + "gone"
    inv = str(write_inventory(storage, {"h1": lxc_host({
        keep: busybox(busybox_tree), gone: busybox(busybox_tree)})}))
    virtmix("apply", inv, "--yes", check=0)
    write_inventory(storage, {"h1": lxc_host({keep: busybox(busybox_tree)})})
    res = virtmix("plan", inv, check=0)
    assert "--prune removes them" in res.stdout
    virtmix("apply", inv, "--yes", check=0)
    assert gone in names_with_prefix(lxc_conn)
    virtmix("apply", inv, "--yes", "--prune", check=0)
    assert names_with_prefix(lxc_conn) == [keep]
    virtmix("plan", inv, "--prune", check=0)


def test_isolated_network_and_container_on_it(lxc_conn, storage, busybox_tree):
    net, name = PFX + "net", PFX + "onnet"
    networks = {net: {"host": "h1", "mode": "isolated", "bridge": "vmixtap0",
                      "ipv4": "10.231.77.1/24"}}
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(
        busybox_tree, interfaces=[{"network": net, "ipv4": "10.231.77.10/24"}])})},
        networks=networks))
    res = virtmix("plan", inv, check=10)
    assert f"+ network {net}" in res.stdout
    virtmix("apply", inv, "--yes", check=0)
    lnet = lxc_conn.networkLookupByName(net)
    assert lnet.isActive() and lnet.autostart()
    assert "<forward" not in lnet.XMLDesc(0)  # isolated: traffic stays on the host
    wait_init(name)
    addr = lxc_run(name, ["ip", "-o", "-4", "addr", "show", "eth0"]).stdout
    assert "10.231.77.10/24" in addr
    ports = subprocess.run(["ip", "-o", "link", "show", "master", "vmixtap0"],
                           capture_output=True, text=True).stdout
    assert ports.count("master vmixtap0") == 1  # the container's veth is on the bridge
    mac = lxc_conn.lookupByName(name).XMLDesc(0).split("<mac address='")[1][:17]
    virtmix("plan", inv, check=0)

    # A changed network is redefined (kept running: its domains stay attached).
    networks[net]["dhcp"] = True
    write_inventory(storage, {"h1": lxc_host({name: busybox(
        busybox_tree, interfaces=[{"network": net, "ipv4": "10.231.77.10/24"}])})},
        networks=networks)
    res = virtmix("plan", inv, check=10)
    assert "dhcp: (unset) -> 10.231.77.100, 10.231.77.254  [restart]" in res.stdout
    virtmix("apply", inv, "--yes", check=0)
    virtmix("plan", inv, check=0)
    assert mac in lxc_conn.lookupByName(name).XMLDesc(0)  # redefinitions kept the MAC

    virtmix("destroy", inv, "--yes", check=0)
    assert net not in [n.name() for n in lxc_conn.listAllNetworks(0)]


def test_memory_limits_mean_what_they_say(lxc_conn, storage, busybox_tree):
    """A removed hard limit falls back to `memory:` (not unlimited), `info` says the same,
    and a container's `memory:` changes live and persistently (issue 14)."""
    name = PFX + "mem"
    MiB = 1024 * 1024

    def inventory(**spec) -> str:
        return str(write_inventory(storage, {"h1": lxc_host({
            name: busybox(busybox_tree, **spec)})}))

    def limit() -> int:
        dom_id = lxc_conn.lookupByName(name).ID()
        return int((cgroup_dir("memory", dom_id) / "memory.limit_in_bytes").read_text())

    inv = inventory(memtune={"hard_limit": "48MiB"})
    virtmix("apply", inv, "--yes", check=0)
    wait_init(name)
    pid = container_init_pid(name)
    assert limit() == 48 * MiB

    inv = inventory()
    shown = virtmix("plan", inv, check=10).stdout
    assert "memtune.hard_limit: 48MiB -> (unset)  [live]" in shown, shown
    assert "live now: memtune.hard_limit=64MiB" in shown, shown
    virtmix("apply", inv, "--yes", check=0)
    assert limit() == 64 * MiB  # memory: 64MiB, not 9223372036854771712
    info = json.loads(virtmix("info", name, "-o", "json", check=0).stdout)
    assert info["memory_kib"] == info["mem_limit_kib"] == 64 * 1024
    assert "nothing to do" in virtmix("plan", inv, check=0).stdout

    inv = inventory(memory="96MiB")
    shown = virtmix("plan", inv, check=10).stdout
    assert "memory_kib: 64MiB -> 96MiB  [live]" in shown, shown
    virtmix("apply", inv, "--yes", check=0)
    assert container_init_pid(name) == pid, "a memory change must not restart a container"
    assert limit() == 96 * MiB
    inactive = lxc_conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<memory unit='KiB'>98304</memory>" in inactive
    info = json.loads(virtmix("info", name, "-o", "json", check=0).stdout)
    assert info["memory_kib"] == info["mem_limit_kib"] == 96 * 1024
    assert "nothing to do" in virtmix("plan", inv, check=0).stdout
