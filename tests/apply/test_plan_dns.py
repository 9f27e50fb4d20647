"""Plan of a network's DNS names: persistent redefine plus a live update of the running one."""

from __future__ import annotations

from virtmix.converge.observe import ObservedNetwork, network_fields
from virtmix.converge.plan import LIVE, DesiredNetwork, Options, plan_network
from virtmix.util.identity import network_uuid as _network_uuid


def network_uuid(host: str, name: str) -> str:
    return _network_uuid("", host, name)  # plan_network's default site


def net_xml(hosts: dict[str, str]) -> str:
    dns = "".join(f"<host ip='{ip}'><hostname>{n}</hostname></host>" for n, ip in hosts.items())
    return (f"<network><name>n</name><uuid>{network_uuid('hv1', 'n')}</uuid>"
            f"<bridge name='br0'/>{f'<dns>{dns}</dns>' if dns else ''}"
            "<ip address='10.0.0.1' netmask='255.255.255.0'/></network>")


def observed(config: dict[str, str], live: dict[str, str] | None) -> ObservedNetwork:
    xml = net_xml(config)
    return ObservedNetwork("n", network_uuid("hv1", "n"), live is not None, True, xml,
                           network_fields(xml), network_fields(net_xml(live))
                           if live is not None else None)


WANT = DesiredNetwork("n", "hv1", "lxc:///system", net_xml({"a": "10.0.0.10",
                                                            "b": "10.0.0.11"}))


def test_new_name_is_redefined_and_added_live():
    item = plan_network(WANT, observed({"a": "10.0.0.10"}, {"a": "10.0.0.10"}), Options())
    assert item.ops == ["network-redefine", "network-dns"]
    assert [(c.field, c.mode) for c in item.changes] == [("dns_hosts", LIVE)]
    assert item.live == {"dns_add": [("10.0.0.11", ("b",))], "dns_remove": []}


def test_running_network_behind_its_definition_gets_only_the_live_update():
    stale = {"a": "10.0.0.10", "gone": "10.0.0.12"}
    item = plan_network(WANT, observed({"a": "10.0.0.10", "b": "10.0.0.11"}, stale), Options())
    assert item.ops == ["network-dns"]
    assert item.live == {"dns_add": [("10.0.0.11", ("b",))],
                         "dns_remove": [("10.0.0.12", ("gone",))]}


def test_inactive_network_is_redefined_and_started():
    item = plan_network(WANT, observed({}, None), Options())
    assert item.ops == ["network-redefine", "network-start"]


def test_nothing_to_do_when_both_agree():
    both = {"a": "10.0.0.10", "b": "10.0.0.11"}
    assert plan_network(WANT, observed(both, both), Options()).ops == []
