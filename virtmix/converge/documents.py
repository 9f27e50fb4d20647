"""The desired documents plan compares with what libvirt has: one rendered domain per entry,
one rendered network per inventory network.

desired.py makes them (it renders), plan.py reads them (it compares): both import them from
here, so neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtmix.inventory.site import Entry


@dataclass(frozen=True)
class DesiredDomain:
    entry: Entry
    xml: str


@dataclass(frozen=True)
class DesiredNetwork:
    name: str
    host: str          # the network's `host:` (an inventory host, or a guest for nested)
    uri: str
    xml: str
    inv_host: str = ""  # the inventory host it runs on (apply groups work by it)
    nested: bool = False
