"""Translate the inventory's container entries (inventory.model) into rootfs specs and setups."""

from __future__ import annotations

from pathlib import Path

from virtmix.errors import InventoryError
from virtmix.inventory.model import Container, Network, RootfsBuild, RootfsPath
from virtmix.rootfs.spec import ContainerSetup, InterfaceSetup, RootfsSpec


def spec_from_model(rootfs: RootfsBuild | RootfsPath, *, base_dir: Path | None = None,
                    mirror: str | None = None) -> RootfsSpec:
    """A RootfsSpec from a model.RootfsBuild; a relative hook is relative to base_dir."""
    if not isinstance(rootfs, RootfsBuild):
        raise InventoryError("rootfs: this entry uses an existing tree (path), nothing to build")
    hook = rootfs.hook
    if hook and base_dir is not None and not Path(hook).is_absolute():
        hook = str(base_dir / hook)
    return RootfsSpec(
        distro=rootfs.distro, suite=rootfs.suite, variant=rootfs.variant,
        components=tuple(rootfs.components), packages=tuple(rootfs.packages),
        architecture=rootfs.architecture, mirror=rootfs.mirror or mirror, hook=hook)


def default_nameservers(container: Container, networks: dict[str, Network]
                        ) -> tuple[str, ...]:
    """The container's `dns:`, else the address of the inventory network its first interface
    is on: libvirt runs dnsmasq there (DNS, and DHCP when enabled), as lxc-net does on
    lxcbr0. systemd-networkd without resolved writes no resolv.conf, so virtmix does."""
    if container.dns:
        return tuple(str(a) for a in container.dns)
    for iface in container.interfaces[:1]:
        net = networks.get(iface.network) if iface.network else None
        if net is not None and net.ipv4 is not None:
            return (str(net.ipv4.ip),)
    return ()


def setup_from_model(name: str, container: Container,
                     networks: dict[str, Network] | None = None) -> ContainerSetup:
    """A ContainerSetup from a model.Container (interfaces named eth0.. when unnamed);
    `networks` (the inventory's) give the default nameserver."""
    ifaces = []
    for i, iface in enumerate(container.interfaces):
        ipv4 = str(iface.ipv4) if iface.ipv4 is not None else None
        dhcp = iface.dhcp if iface.dhcp is not None else ipv4 is None
        ifaces.append(InterfaceSetup(
            name=iface.name or f"eth{i}", dhcp=dhcp, ipv4=ipv4,
            gateway=str(iface.gateway) if iface.gateway is not None else None))
    return ContainerSetup(
        name=name, hostname=container.hostname, interfaces=tuple(ifaces),
        ssh_keys=tuple(container.ssh_keys),
        root_password="generate" if container.root_password == "generate" else None,
        sshd=container.sshd, locale=container.locale, timezone=container.timezone,
        nameservers=default_nameservers(container, networks or {}))
