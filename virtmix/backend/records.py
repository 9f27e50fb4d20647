"""Plain records of what libvirt reports, so code above the backend never sees libvirt objects."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from lxml import etree

from virtmix.util.identity import VIRTMIX_NS

# virDomainState numbers -> the words virsh prints.
_STATES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
    5: "shutoff", 6: "crashed", 7: "pmsuspended",
}


def domain_state_name(code: int) -> str:
    return _STATES.get(code, "unknown")


def is_active_state(state: str) -> bool:
    """Whether a state word (Backend.state) is a running instance of any kind."""
    return state not in ("shutoff", "nostate", "crashed")


@dataclass(frozen=True)
class DomainRecord:
    """One domain as libvirt reports it: identity, state and its persistent XML."""

    uri: str
    name: str
    uuid: str
    state: str
    persistent: bool
    xml: str  # the persistent (inactive) definition, or the live one for a transient domain
    id: int | None = None

    @property
    def active(self) -> bool:
        return is_active_state(self.state) or self.id not in (None, -1)

    @cached_property
    def tree(self) -> etree._Element:
        return etree.fromstring(self.xml.encode())

    @cached_property
    def metadata(self) -> dict[str, str] | None:
        """virtmix's metadata attributes, or None for a domain virtmix did not define."""
        node = self.tree.find(f"metadata/{{{VIRTMIX_NS}}}entry")
        return dict(node.attrib) if node is not None else None

    @property
    def managed(self) -> bool:
        return self.metadata is not None

    @property
    def kind(self) -> str:
        """'lxc' for containers, 'kvm' for QEMU/KVM guests (the column `ls` shows)."""
        return "lxc" if self.tree.get("type") == "lxc" else "kvm"


@dataclass(frozen=True)
class NetworkRecord:
    uri: str
    name: str
    uuid: str
    active: bool
    persistent: bool
    autostart: bool
    xml: str
    bridge: str | None = None
    live_xml: str | None = None  # the running network's document (its dnsmasq's view)


@dataclass(frozen=True)
class NodeInfo:
    """virNodeGetInfo: what the host has, for placement's capacity."""

    memory_kib: int
    cpus: int


@dataclass(frozen=True)
class RuntimeInfo:
    """virDomainGetInfo: memory in use and CPU time, for `info`."""

    max_memory_kib: int
    memory_kib: int
    vcpus: int
    cpu_time_ns: int


@dataclass(frozen=True)
class GuestSnapshot:
    """One libvirt snapshot of a guest."""

    name: str
    created: int  # seconds since the epoch, as libvirt records it
    state: str    # the domain's state when it was taken (running, paused, shutoff)
    description: str
