"""Names in the network's DNS: entries with static addresses resolve each other by name.

Busybox containers on an isolated test network; `nslookup NAME <the network's address>`
inside one asks the network's own dnsmasq. A container added later is entered live
(virNetworkUpdate, no network restart); a destroyed one is removed live and from the
persistent definition.
"""

from __future__ import annotations

import libvirt
import pytest
from apply_helpers import busybox, lxc_host, make_storage_dir, remove_storage_dir, virtmix
from apply_helpers import write_inventory as write_site
from support import cleanup_domains, lxc_run, wait_for

pytestmark = pytest.mark.live

PFX = "vmixt-dns-"
NET, GW = f"{PFX}net", "10.213.78.1"
ADDR = {f"{PFX}a": "10.213.78.10", f"{PFX}b": "10.213.78.11", f"{PFX}c": "10.213.78.12"}


@pytest.fixture
def storage(lxc_conn):
    cleanup_domains(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    cleanup_domains(lxc_conn, PFX)
    remove_storage_dir(path)


def write_inventory(storage, tree, names):
    containers = {n: busybox(tree, interfaces=[{"network": NET, "ipv4": f"{ADDR[n]}/24"}])
                  for n in names}
    return str(write_site(storage, {"hv1": lxc_host(containers)}, name="vmixt-dns-site",
                          networks={NET: {"host": "hv1", "bridge": "vmixtdns0",
                                          "ipv4": f"{GW}/24"}}))


def resolves(where: str, name: str) -> str:
    # A records only: the network's dnsmasq has no upstream and refuses AAAA for its names
    res = lxc_run(where, ["nslookup", "-type=a", name, GW], timeout=10)
    return res.stdout if res.returncode == 0 else ""


def test_names_resolve_live_and_go_on_destroy(lxc_conn, storage, busybox_tree):
    a, b, c = ADDR
    inv = write_inventory(storage, busybox_tree, [a, b])
    virtmix("apply", inv, "--yes", check=0)
    for me, other in ((a, b), (b, a)):
        assert ADDR[other] in wait_for(lambda me=me, other=other: resolves(me, other), 20,
                                       f"{me} resolving {other}")
    net = lxc_conn.networkLookupByName(NET)
    bridge_before = net.bridgeName()

    # A third container: its name reaches the running dnsmasq without a network restart.
    inv = write_inventory(storage, busybox_tree, [a, b, c])
    plan = virtmix("plan", inv, check=10).stdout
    assert "dns_hosts" in plan, plan
    virtmix("apply", inv, "--yes", check=0)
    assert ADDR[c] in wait_for(lambda: resolves(a, c), 20, f"{a} resolving {c}")
    assert ADDR[a] in wait_for(lambda: resolves(c, a), 20, f"{c} resolving {a}")
    assert net.bridgeName() == bridge_before and net.isActive()
    virtmix("plan", inv, check=0)  # live and persistent agree: nothing left to do

    # destroy NAME takes its name out of the DNS, live and persistent.
    virtmix("destroy", c, "--yes", check=0)
    live = net.XMLDesc(0)
    config = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    assert c not in live and c not in config and b in live and b in config
    wait_for(lambda: ADDR[c] not in resolves(a, c), 20, f"{c} gone from the DNS")
    assert ADDR[b] in resolves(a, b)
    virtmix("destroy", inv, "--yes", check=0)
