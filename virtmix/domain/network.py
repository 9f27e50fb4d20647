"""A libvirt <network> document: the fields virtmix owns (mode, bridge, address, DHCP, DNS)."""

from __future__ import annotations

from typing import Any

from virtmix.domain.xmlnode import Element, parse


def fields(xml: str | Element) -> dict[str, Any]:
    root = parse(xml)
    fwd = root.find("forward")
    bridge = root.find("bridge")
    ip = root.find("ip")
    rng = root.find("ip/dhcp/range")
    hosts = sorted((h.get("mac", "").lower(), h.get("name"), h.get("ip"))
                   for h in root.findall("ip/dhcp/host"))
    return {
        "mode": fwd.get("mode", "nat") if fwd is not None else "isolated",
        "bridge": bridge.get("name") if bridge is not None else None,
        "ipv4": (ip.get("address"), ip.get("netmask") or ip.get("prefix"))
        if ip is not None else None,
        "dhcp": (rng.get("start"), rng.get("end")) if rng is not None else None,
        "dhcp_hosts": tuple(hosts),
        "dns_hosts": dns_hosts(root),
    }


def dns_hosts(root: Element) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A network's <dns><host ip><hostname>...: ((ip, (names...)), ...), sorted."""
    return tuple(sorted((h.get("ip", ""), tuple(sorted(n.text or "" for n in
                                                        h.findall("hostname"))))
                        for h in root.findall("dns/host")))
