"""<interface>: network interfaces (source, MAC, a container's in-guest name and address)."""

from __future__ import annotations

from dataclasses import dataclass

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
    for node in root.findall("devices/interface"):
        kind = node.get("type") or ""
        src = node.find("source")
        source = src.get(kind) if src is not None and kind in ("network", "bridge") else None
        mac, gdev, model = node.find("mac"), node.find("guest"), node.find("model")
        iface = Iface(kind, source, mac.get("address") if mac is not None else None,
                      gdev.get("dev") if gdev is not None else None,
                      model.get("type") if model is not None else None)
        first = node.find("ip")
        if first is not None:
            iface.ip = f"{first.get('address')}/{first.get('prefix')}"
        v4 = node.find("ip[@family='ipv4']")
        if v4 is None:
            v4 = next((i for i in node.findall("ip") if ":" not in (i.get("address") or "")),
                      None)
        if v4 is not None and v4.get("address"):
            iface.ipv4 = f"{v4.get('address')}/{v4.get('prefix') or 24}"
        route = node.find("route[@gateway]")
        iface.gateway = route.get("gateway") if route is not None else None
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
