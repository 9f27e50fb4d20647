"""Known addresses for LXC-host guests the inventory gives none.

A guest with `containers:` is reached over ssh at a known address (its libvirt is
`lxc+ssh://root@ADDRESS/system`, its host key pinned for that address). When the entry names
neither `ipv4` nor `lxc_uri` but sits on an inventory network with an address, virtmix picks
one: derived from the guest's name alone (not from the order of entries), in the part of the
subnet that the network's DHCP range leaves to static hosts (views.network_view), so that an
inventory edit elsewhere never moves a guest. The network then hands it out as a DHCP host
entry, and the guest's own configuration sets it statically, as for a written `ipv4`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface

from virtmix.inventory.model import Guest, Inventory, Network

# .2-.99 of a network's /24 (or larger): static addresses (written, or picked here); a
# default DHCP range (render.views.network_view) starts above them. Defined here, in the
# inventory layer, because loading an inventory must not import the render layer.
STATIC_HOSTS = 98


def _candidates(net) -> list[IPv4Address]:
    subnet = net.ipv4.network
    base = int(subnet.network_address)
    span = min(STATIC_HOSTS, subnet.num_addresses - 3)
    own = net.ipv4.ip
    out = [IPv4Address(base + 2 + i) for i in range(max(span, 0))]
    if net.dhcp and net.dhcp is not True:  # an explicit range: stay out of it
        out = [a for a in out if not net.dhcp.start <= a <= net.dhcp.end]
    return [a for a in out if a != own]


def allocate_guest_addresses(inv: Inventory,
                             fail: Callable[[str, tuple], None]) -> dict[str, str]:
    """Give each LXC-host guest without ipv4/lxc_uri an address on its first inventory
    network with one; returns {guest: address} for what was picked. A name whose address is
    taken (by a written ipv4 or another picked one) is an error asking for an explicit ipv4."""
    taken: dict[tuple[str, IPv4Address], str] = {}
    for host in inv.hosts.values():
        for kind in ("containers", "guests"):
            for name, e in getattr(host, kind).items():
                for iface in e.interfaces:
                    if iface.network and iface.ipv4 is not None:
                        taken[(iface.network, iface.ipv4.ip)] = name
    picked: dict[str, str] = {}
    for hname, host in inv.hosts.items():
        for gname, guest in host.guests.items():
            if not _needs_address(guest):
                continue
            for i, iface in enumerate(guest.interfaces):
                net = inv.networks.get(iface.network or "")
                if net is None or net.ipv4 is None or net.mode == "bridge":
                    continue
                options = _candidates(net)
                if not options:
                    break
                digest = int.from_bytes(hashlib.sha256(gname.encode()).digest()[:8], "big")
                address = options[digest % len(options)]
                other = taken.get((iface.network, address))
                if other is not None:
                    fail(f"the address virtmix would pick for guest {gname!r} on network "
                         f"{iface.network!r} ({address}) is {other!r}'s; give this guest an "
                         "ipv4 of its own", ("hosts", hname, "guests", gname, "interfaces", i))
                iface.ipv4 = IPv4Interface(f"{address}/{net.ipv4.network.prefixlen}")
                taken[(iface.network, address)] = gname
                picked[gname] = str(address)
                break
    return picked


def _needs_address(guest: Guest) -> bool:
    return bool(guest.containers) and not guest.lxc_uri and not any(
        i.ipv4 for i in guest.interfaces)


def dhcp_range(net: Network) -> tuple[IPv4Address, IPv4Address]:
    """The DHCP range of a network with `dhcp:` and an address: the given one, or the
    subnet from .2 on, leaving the low addresses of a /24 or larger for static ones.
    (An empty range, start after end, is the inventory's error to report.)"""
    assert net.ipv4 is not None and net.dhcp
    subnet = net.ipv4.network
    if net.dhcp is True:
        first = int(subnet.network_address) + 2 + (
            STATIC_HOSTS if subnet.num_addresses >= 256 else 0)
        return IPv4Address(first), subnet.broadcast_address - 1
    return net.dhcp.start, net.dhcp.end
