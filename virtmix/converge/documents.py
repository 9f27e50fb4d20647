"""The desired documents plan compares with what libvirt has (one rendered domain per entry,
one rendered network per inventory network), and the operations a plan orders on them.

desired.py makes them (it renders), plan.py reads them (it compares): both import them from
here, so neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from virtmix.inventory.site import Entry


@dataclass(frozen=True)
class DesiredDomain:
    entry: Entry
    xml: str
    cgroups: str = "v1"  # where it runs: on "v2" libvirt's <shares> are cpu.weight values


@dataclass(frozen=True)
class DesiredNetwork:
    name: str
    host: str          # the network's `host:` (an inventory host, or a guest for nested)
    uri: str
    xml: str
    inv_host: str = ""  # the inventory host it runs on (apply groups work by it)
    nested: bool = False


class Op(StrEnum):
    """One step apply runs on a domain or network (plan lists them per item, in order).

    A StrEnum: plans print and compare them as the words below."""

    PREPARE = "prepare"
    DEFINE = "define"
    REDEFINE = "redefine"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RECREATE = "recreate"
    LIVE = "live"
    AUTOSTART = "autostart"
    REMOVE = "remove"
    MOVE = "move"  # from another connection of the site (converge/move.py, migration)
    NETWORK_DEFINE = "network-define"
    NETWORK_REDEFINE = "network-redefine"
    NETWORK_DNS = "network-dns"  # the running dnsmasq's <dns><host> entries (virNetworkUpdate)
    NETWORK_START = "network-start"
    NETWORK_REMOVE = "network-remove"
