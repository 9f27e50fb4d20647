"""<interface>: network interfaces (source, MAC, a container's in-guest name and address)."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from virtmix.domain.xmlnode import Element


@dataclass
class Iface:
    type: str                 # libvirt's: network, bridge, user, ...
    source: str | None
    mac: str | None           # as written
    guest_dev: str | None = None
    model: str | None = None
    ip: str | None = None     # the first <ip>: address/prefix as written
    ipv4: str | None = None   # the IPv4 one, a.b.c.d/prefix (prefix 24 when absent)
    gateway: str | None = None

    @property
    def kind(self) -> str:
        """network | bridge | other (what `ls`, `info` and `import` show)."""
        return self.type if self.type in ("network", "bridge") else "other"


def read(root: Element) -> list[Iface]:
    out = []
    for node in root.iterfind("devices/interface"):
        kind = node.get("type") or ""
        iface = Iface(kind, None, None)
        v4 = None
        for sub in node:  # one pass over the children (plans read thousands of documents)
            tag = sub.tag
            if tag == "source" and kind in ("network", "bridge"):
                iface.source = sub.get(kind)
            elif tag == "mac":
                iface.mac = sub.get("address")
            elif tag == "guest":
                iface.guest_dev = sub.get("dev")
            elif tag == "model":
                iface.model = sub.get("type")
            elif tag == "ip":
                address = sub.get("address")
                if iface.ip is None:
                    iface.ip = f"{address}/{sub.get('prefix')}"
                family = sub.get("family")
                if v4 is None and address and (family == "ipv4" or (
                        family is None and ":" not in address)):
                    v4 = sub
            elif tag == "route" and iface.gateway is None and sub.get("gateway"):
                iface.gateway = sub.get("gateway")
        if v4 is not None:
            iface.ipv4 = f"{v4.get('address')}/{v4.get('prefix') or 24}"
        out.append(iface)
    return out


def fields(ifaces: list[Iface], lxc: bool) -> tuple[tuple[str | None, ...], ...]:
    """The plan's form: (type, source, mac lowercased, then guest dev, address, gateway for a
    container, or the model for a guest)."""
    out = []
    for i in ifaces:
        item: tuple[str | None, ...] = (i.type, i.source, i.mac.lower() if i.mac else None)
        item += (i.guest_dev, i.ip, i.gateway) if lxc else (i.model,)
        out.append(item)
    return tuple(out)


def set_macs(root: Element, macs: dict[int, str]) -> None:
    """Give the interfaces at these positions these MAC addresses (plan keeps a domain's)."""
    for i, node in enumerate(root.iterfind("devices/interface")):
        if i in macs:
            mac = node.find("mac")
            if mac is None:
                mac = etree.SubElement(node, "mac")
            mac.set("address", macs[i])
