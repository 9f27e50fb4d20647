"""The bulk read of a connection: every domain's owned fields (config and running), networks.

The fields come from virtmix.domain.fields (one reader for rendered and libvirt XML alike);
sizes are KiB, cpusets canonical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtmix.domain import metadata, network
from virtmix.domain.fields import owned_fields
from virtmix.domain.xmlnode import parse
from virtmix.util.units import normalize_cpuset

__all__ = ["ObservedConnection", "ObservedDomain", "ObservedNetwork", "cgroup_file",
           "is_local_uri", "metadata_of", "network_fields", "observe_connection",
           "owned_fields", "parse_xml", "read_lxc_cpuset"]

Fields = dict[str, Any]
parse_xml = parse  # the reader of every document plan and observe handle
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


@dataclass
class ObservedConnection:
    """Everything plan needs from one libvirt connection, or why it could not be read."""

    uri: str
    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    error: str | None = None


def is_local_uri(uri: str) -> bool:
    """A URI whose daemon runs on this machine (so its files and cgroups are ours to read)."""
    m = re.match(r"^[a-z]+(\+[a-z]+)?://([^/]*)/", uri)
    if not m:
        return True
    transport, host = m.group(1), m.group(2).rsplit("@", 1)[-1].split(":")[0]
    return host in ("", "localhost", "127.0.0.1", "::1", "[::1]") or transport == "+unix"


def cgroup_file(pid: int, controller: str, filename: str) -> Path | None:
    """A process' cgroup file for a controller (v1 hierarchy or the v2 unified tree)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}") / filename
        if ctrls == "":
            v2 = path
    if v2 is not None:
        return Path(f"/sys/fs/cgroup{v2}") / filename
    return None


def read_lxc_cpuset(pid: int) -> str | None:
    """The cpuset a running LXC container really has (its libvirt_lxc process' cgroup).

    The LXC driver has no live cpuset API, so virtmix writes the cgroup itself and the
    running XML never shows it: the cgroup is the truth.
    """
    path = cgroup_file(pid, "cpuset", "cpuset.cpus")
    try:
        text = path.read_text().strip() if path else ""
    except OSError:
        return None
    return normalize_cpuset(text) if text else None


def observe_connection(conn: Any, *, read_cgroups: bool | None = None) -> ObservedConnection:
    """One bulk read of a connection: every domain (config + running XML) and network."""
    obs = ObservedConnection(conn.uri)
    if read_cgroups is None:  # only the real LXC driver's ids are pids of this machine
        read_cgroups = is_local_uri(conn.uri) and conn.driver == "lxc"
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
                dom.live_cpuset = read_lxc_cpuset(rec.id)
        obs.domains[rec.name] = dom
    for net in conn.list_networks():
        obs.networks[net.name] = ObservedNetwork(
            net.name, net.uuid, net.active, net.persistent, net.xml, network_fields(net.xml))
    return obs
