"""The bulk read of a connection: every domain's owned fields (config and running), networks.

The fields come from virtmix.domain.fields (one reader for rendered and libvirt XML alike);
sizes are KiB, cpusets canonical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtmix.backend.protocol import Backend
from virtmix.backend.records import NodeInfo
from virtmix.domain import metadata, network
from virtmix.domain.fields import owned_fields
from virtmix.domain.xmlnode import parse
from virtmix.hosts import cgroupfs
from virtmix.util.uris import is_local

__all__ = ["ObservedConnection", "ObservedDomain", "ObservedNetwork", "metadata_of",
           "network_fields", "observe_connection", "owned_fields", "parse_xml"]

Fields = dict[str, Any]
parse_xml = parse  # the reader of every document plan and observe handle
dns_hosts = network.dns_hosts
metadata_of = metadata.read


def network_fields(xml: str) -> Fields:
    """The fields virtmix owns in a network document."""
    return network.fields(xml)


@dataclass
class ObservedDomain:
    """One domain as the bulk read found it."""

    name: str
    uuid: str
    state: str
    active: bool
    persistent: bool
    autostart: bool
    xml: str                     # persistent definition (the live one if transient)
    config: Fields               # owned fields of the persistent definition
    metadata: dict[str, str] | None
    live: Fields | None = None   # owned fields of the running definition
    live_cpuset: str | None = None  # an LXC container's cpuset cgroup, read on this machine
    cgroups: bool = False        # its limits are kernel cgroups (libvirt's LXC driver)

    @property
    def managed(self) -> bool:
        return self.metadata is not None


@dataclass
class ObservedNetwork:
    name: str
    uuid: str
    active: bool
    persistent: bool
    xml: str
    fields: Fields
    live_fields: Fields | None = None  # of the running network (None when inactive)


@dataclass
class ObservedConnection:
    """Everything plan needs from one libvirt connection, or why it could not be read."""

    uri: str
    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    error: str | None = None
    node: NodeInfo | None = None  # the host's memory and CPUs (placement's capacity)


def observe_connection(conn: Backend, *, read_cgroups: bool | None = None) -> ObservedConnection:
    """One bulk read of a connection: every domain (config + running XML) and network."""
    obs = ObservedConnection(conn.uri, node=conn.node_info())
    if read_cgroups is None:  # only the real LXC driver's ids are pids of this machine
        read_cgroups = is_local(conn.uri) and conn.driver == "lxc"
    autostart = conn.autostart_names()
    driver = conn.driver
    for rec, live_xml in conn.list_domains_with_live():
        root = parse_xml(rec.xml)
        dom = ObservedDomain(
            name=rec.name, uuid=rec.uuid, state=rec.state, active=rec.active,
            persistent=rec.persistent, autostart=rec.name in autostart, xml=rec.xml,
            config=owned_fields(root), metadata=metadata_of(root), cgroups=driver == "lxc")
        if live_xml is not None:
            dom.live = owned_fields(live_xml)
            if read_cgroups and dom.config["type"] == "lxc" and rec.id not in (None, -1):
                dom.live_cpuset = cgroupfs.read_cpuset(rec.id)
        obs.domains[rec.name] = dom
    for net in conn.list_networks():
        obs.networks[net.name] = ObservedNetwork(
            net.name, net.uuid, net.active, net.persistent, net.xml, network_fields(net.xml),
            network_fields(net.live_xml) if net.live_xml else None)
    return obs
