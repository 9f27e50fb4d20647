"""Live libvirt XML -> the fields virtmix owns (a flat, comparable model), and the bulk read.

libvirt normalises what it is given (units, UUIDs, added defaults, runtime devices), so plans
compare these models, never XML text. The same parser reads the XML virtmix renders, so
both sides of a comparison come out of one function. Field names follow libvirt's vocabulary;
sizes are KiB, cpusets canonical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from virtmix.util.identity import VIRTMIX_NS
from virtmix.util.units import normalize_cpuset

# libvirt's memory units (docs: formatdomain.html#memory-allocation) -> bytes.
_UNIT_BYTES = {
    "b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
    "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4,
    "t": 1024**4, "tib": 1024**4,
}
MEMTUNE_KEYS = ("hard_limit", "soft_limit", "swap_hard_limit", "min_guarantee")
Fields = dict[str, Any]


def _kib(node: etree._Element | None) -> int | None:
    if node is None or not (node.text or "").strip():
        return None
    factor = _UNIT_BYTES.get((node.get("unit") or "KiB").lower(), 1024)
    return -(-int(node.text.strip()) * factor // 1024)


def _int(node: etree._Element | None) -> int | None:
    if node is None or not (node.text or "").strip():
        return None
    return int(node.text.strip())


def _text(root: etree._Element, path: str) -> str | None:
    node = root.find(path)
    return node.text.strip() if node is not None and node.text else None


def _cpuset(value: str | None) -> str | None:
    return normalize_cpuset(value) if value else None


def parse_xml(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode() if isinstance(xml, str) else xml)


def metadata_of(root: etree._Element) -> dict[str, str] | None:
    node = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    return dict(node.attrib) if node is not None else None


def _cputune(root: etree._Element, out: Fields) -> None:
    ct = root.find("cputune")
    for key in ("shares", "period", "quota"):
        out[f"cputune.{key}"] = _int(ct.find(key)) if ct is not None else None
    pins: list[tuple[int, str]] = []
    emulator = None
    if ct is not None:
        pins = sorted((int(p.get("vcpu")), normalize_cpuset(p.get("cpuset")))
                      for p in ct.findall("vcpupin"))
        ep = ct.find("emulatorpin")
        emulator = _cpuset(ep.get("cpuset")) if ep is not None else None
    out["cputune.vcpupin"] = tuple(pins)
    out["cputune.emulatorpin"] = emulator


def _interfaces(root: etree._Element, lxc: bool) -> tuple:
    out = []
    for iface in root.findall("devices/interface"):
        kind = iface.get("type")
        src = iface.find("source")
        source = src.get(kind) if src is not None and kind in ("network", "bridge") else None
        mac = iface.find("mac")
        item: list[Any] = [kind, source, mac.get("address").lower() if mac is not None else None]
        if lxc:
            ip = iface.find("ip")
            route = iface.find("route")
            guest = iface.find("guest")
            item += [guest.get("dev") if guest is not None else None,
                     f"{ip.get('address')}/{ip.get('prefix')}" if ip is not None else None,
                     route.get("gateway") if route is not None else None]
        else:
            model = iface.find("model")
            item.append(model.get("type") if model is not None else None)
        out.append(tuple(item))
    return tuple(out)


def _lxc_fields(root: etree._Element, out: Fields) -> None:
    os_ = root.find("os")
    out["os.init"] = _text(os_, "init") if os_ is not None else None
    out["os.initargs"] = tuple(a.text or "" for a in root.findall("os/initarg"))
    uid = root.find("idmap/uid")
    out["idmap"] = ((int(uid.get("start")), int(uid.get("target")), int(uid.get("count")))
                    if uid is not None else None)
    out["privnet"] = root.find("features/privnet") is not None
    out["filesystems"] = tuple(
        (fs.find("source").get("dir"), fs.find("target").get("dir"),
         fs.find("readonly") is not None)
        for fs in root.findall("devices/filesystem")
        if fs.get("type", "mount") == "mount" and fs.find("source") is not None)


def _qemu_fields(root: etree._Element, out: Fields) -> None:
    ostype = root.find("os/type")
    out["os.arch"] = ostype.get("arch") if ostype is not None else None
    out["os.machine"] = ostype.get("machine") if ostype is not None else None
    for key in ("kernel", "initrd", "cmdline"):
        out[f"os.{key}"] = _text(root, f"os/{key}")
    disks = []
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        src, drv, tgt = disk.find("source"), disk.find("driver"), disk.find("target")
        disks.append((src.get("file") or src.get("dev") if src is not None else None,
                      drv.get("type") if drv is not None else None,
                      tgt.get("dev") if tgt is not None else None,
                      tgt.get("bus") if tgt is not None else None))
    out["disks"] = tuple(disks)
    log = root.find("devices/serial/log")
    out["serial_log"] = log.get("file") if log is not None else None


def owned_fields(xml: str | etree._Element) -> Fields:
    """The fields virtmix owns, from a domain document (rendered, inactive or live)."""
    root = parse_xml(xml) if isinstance(xml, str | bytes) else xml
    lxc = root.get("type") == "lxc"
    meta = metadata_of(root)
    vcpu = root.find("vcpu")
    out: Fields = {
        "type": root.get("type"),
        "description": _text(root, "description"),
        "metadata": tuple(sorted(meta.items())) if meta is not None else None,
        "memory_kib": _kib(root.find("memory")),
        "vcpus": _int(vcpu),
        "vcpu_cpuset": _cpuset(vcpu.get("cpuset")) if vcpu is not None else None,
    }
    _cputune(root, out)
    for key in MEMTUNE_KEYS:
        out[f"memtune.{key}"] = _kib(root.find(f"memtune/{key}"))
    out["blkio.weight"] = _int(root.find("blkiotune/weight"))
    out["interfaces"] = _interfaces(root, lxc)
    (_lxc_fields if lxc else _qemu_fields)(root, out)
    return out


def network_fields(xml: str) -> Fields:
    """The fields virtmix owns in a network document."""
    root = parse_xml(xml)
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


def dns_hosts(root) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A network's <dns><host ip><hostname>...: ((ip, (names...)), ...), sorted."""
    return tuple(sorted((h.get("ip", ""), tuple(sorted(n.text or "" for n in
                                                        h.findall("hostname"))))
                        for h in root.findall("dns/host")))


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
    for rec, live_xml in conn.list_domains_with_live():
        root = parse_xml(rec.xml)
        dom = ObservedDomain(
            name=rec.name, uuid=rec.uuid, state=rec.state, active=rec.active,
            persistent=rec.persistent, autostart=rec.name in autostart, xml=rec.xml,
            config=owned_fields(root), metadata=metadata_of(root))
        if live_xml is not None:
            dom.live = owned_fields(live_xml)
            if read_cgroups and dom.config["type"] == "lxc" and rec.id not in (None, -1):
                dom.live_cpuset = read_lxc_cpuset(rec.id)
        obs.domains[rec.name] = dom
    for net in conn.list_networks():
        obs.networks[net.name] = ObservedNetwork(
            net.name, net.uuid, net.active, net.persistent, net.xml, network_fields(net.xml),
            network_fields(net.live_xml) if net.live_xml else None)
    return obs
