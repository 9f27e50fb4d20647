"""`virtmix import`: inventory entries for existing domains and classic LXC containers.

Each domain's definition is read back into the inventory's vocabulary (memory, vcpus, vcpu
cpuset, cputune, memtune, blkiotune, interfaces, rootfs, init, mounts, disks, boot). The
result is then checked the way plan will see it: every imported entry is rendered with the
core's templates and its owned fields compared with the domain's definition; what would
still differ (beyond virtmix's metadata, which `apply --adopt` adds) is reported per entry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from virtmix.admin.targets import Session
from virtmix.domain.settings import DomainSettings, parse_domain
from virtmix.domain.tunables import from_libvirt
from virtmix.util.units import format_kib, normalize_cpuset


@dataclass
class Imported:
    """One entry for the inventory and what could not be carried over."""

    name: str
    kind: str  # container | guest
    entry: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    xml: str | None = None  # the domain's definition (None for classic LXC containers)


def _tuning(s: DomainSettings, entry: dict[str, Any], v2: bool) -> None:
    if s.memory_kib:
        entry["memory"] = format_kib(s.memory_kib)
    if s.vcpus != 1:
        entry["vcpus"] = s.vcpus
    cpu: dict[str, Any] = {}
    if s.vcpu_cpuset:
        cpu["cpuset"] = normalize_cpuset(s.vcpu_cpuset)
    if "shares" in s.cputune:
        shares = s.cputune["shares"]
        cpu["shares"] = from_libvirt("cputune.shares", shares, v2)
    cpu.update({k: s.cputune[k] for k in ("period", "quota") if k in s.cputune})
    if s.vcpupin:
        cpu["vcpupin"] = {v: normalize_cpuset(c) for v, c in sorted(s.vcpupin.items())}
    if s.emulatorpin:
        cpu["emulatorpin"] = normalize_cpuset(s.emulatorpin)
    if cpu:
        entry["cpu"] = cpu
    if s.memtune:
        entry["memtune"] = {k: format_kib(v) for k, v in s.memtune.items()}
    if s.blkio_weight:
        entry["blkio"] = {"weight": s.blkio_weight}
    if s.description:
        entry["description"] = s.description


def _interfaces(s: DomainSettings, container: bool, notes: list[str]) -> list[dict]:
    out = []
    for i, iface in enumerate(s.interfaces):
        if iface.kind == "other" or not iface.source:
            notes.append(f"interface {i} ({iface.kind}) is neither on a network nor a "
                         "bridge; not imported")
            continue
        item: dict[str, Any] = {iface.kind: iface.source}
        if iface.mac:
            item["mac"] = iface.mac.lower()
        if container:
            if iface.guest_dev:
                item["name"] = iface.guest_dev
            if iface.ipv4:
                item["ipv4"] = iface.ipv4
            if iface.gateway:
                item["gateway"] = iface.gateway
        elif iface.model:
            item["model"] = iface.model
        out.append(item)
    return out


def _container(s: DomainSettings, entry: dict[str, Any], notes: list[str]) -> None:
    root = s.rootfs
    if root:
        entry["rootfs"] = {"path": root}
    else:
        notes.append("no root filesystem (the container shares the host's /): the inventory "
                     "needs one; rootfs not imported")
    entry["init"] = s.init or ["/sbin/init"]
    entry["privileged"] = s.idmap is None
    if s.idmap is not None:
        # Keep the domain's own range: the tree is owned by it (never silently privileged).
        start, uid, count = s.idmap[:3]
        gid = s.idmap_gid if s.idmap_gid is not None else uid
        if start != 0:
            notes.append(f"idmap {s.idmap} does not start at container id 0; not imported")
        else:
            entry["idmap"] = {"uid": uid, "gid": gid, "count": count}
    mounts = [{"source": f.source, "target": f.target, "readonly": f.readonly}
              for f in s.filesystems if f.target != "/"]
    if mounts:
        entry["mounts"] = mounts
    if not s.privnet and not s.interfaces:
        notes.append("shares the host's network namespace; virtmix gives every container "
                     "its own (<privnet/>)")


def _guest(s: DomainSettings, entry: dict[str, Any], notes: list[str]) -> None:
    entry["virt_type"] = "kvm" if s.type == "kvm" else "qemu"
    if s.arch and s.arch != "x86_64":
        entry["arch"] = s.arch
    if s.machine:
        entry["machine"] = s.machine
    disks = []
    for d in s.disks:
        if d.device != "disk":
            continue
        fmt = d.format if d.format in ("qcow2", "raw") else "raw"
        if d.format not in ("qcow2", "raw"):
            notes.append(f"disk {d.path}: format {d.format} imported as raw")
        disk = {"path": d.path, "format": fmt}
        if d.bus and d.bus != "virtio":
            disk["bus"] = d.bus
        disks.append(disk)
    if disks:
        entry["disks"] = disks
    if s.kernel:
        entry["boot"] = {k: v for k, v in (("kernel", s.kernel), ("initrd", s.initrd),
                                            ("cmdline", s.cmdline)) if v}


def from_domain(xml: str, *, state: str, autostart: bool, v2: bool) -> Imported:
    """An inventory entry (dict, inventory format) for one domain definition."""
    s = parse_domain(xml)
    container = s.type == "lxc"
    imp = Imported(s.name, "container" if container else "guest", {}, xml=xml)
    _tuning(s, imp.entry, v2)
    interfaces = _interfaces(s, container, imp.notes)
    if interfaces:
        imp.entry["interfaces"] = interfaces
    (_container if container else _guest)(s, imp.entry, imp.notes)
    imp.entry["state"] = "running" if state in ("running", "paused", "blocked") else "stopped"
    imp.entry["autostart"] = autostart
    return imp


def network_entry(xml: str, host: str) -> Imported:
    """A libvirt network as an inventory `networks:` entry (mode, bridge, ipv4, dhcp)."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    name = root.findtext("name") or ""
    imp = Imported(name, "network", {"host": host}, xml=xml)
    fwd = root.find("forward")
    mode = "isolated" if fwd is None else fwd.get("mode", "nat")
    if mode not in ("isolated", "nat", "bridge"):
        imp.notes.append(f"forward mode {mode!r} has no inventory equivalent; imported as nat")
        mode = "nat"
    imp.entry["mode"] = mode
    bridge = root.find("bridge")
    if bridge is not None and bridge.get("name"):
        imp.entry["bridge"] = bridge.get("name")
    ip = next((i for i in root.findall("ip") if i.get("family", "ipv4") == "ipv4"), None)
    if ip is not None and ip.get("address"):
        from ipaddress import IPv4Network

        prefix = ip.get("prefix") or IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
        imp.entry["ipv4"] = f"{ip.get('address')}/{prefix}"
        rng = ip.find("dhcp/range")
        if rng is not None:
            imp.entry["dhcp"] = {"start": rng.get("start"), "end": rng.get("end")}
        if ip.find("dhcp/host") is not None:
            imp.notes.append("DHCP host entries come from the containers' static ipv4 in "
                             "the inventory; the network's own list is not imported")
    return imp


def managed_note(meta: dict[str, str]) -> str:
    """What an imported domain's virtmix metadata says about who manages it."""
    if meta.get("site"):
        return (f"already managed by virtmix (site {meta['site']!r}, host "
                f"{meta.get('host', '?')!r}); this inventory keeps that site and host name")
    if meta.get("created-by"):
        return (f"made by `virtmix {meta['created-by']}` outside any inventory; "
                "apply --adopt takes it into this inventory's site")
    return "carries virtmix metadata without a site; apply --adopt takes it over"


def _metadata(xml: str | None) -> dict[str, str]:
    from lxml import etree

    from virtmix.util.identity import VIRTMIX_NS

    if not xml:
        return {}
    node = etree.fromstring(xml.encode()).find(f"metadata/{{{VIRTMIX_NS}}}entry")
    return dict(node.attrib) if node is not None else {}


def described_owner(items: list[Imported]) -> tuple[str | None, str | None]:
    """(site, host) recorded in the imported domains' metadata when they all agree on it.

    An import of what a virtmix site made keeps that site's name and its host's name, so
    the networks it made (their UUIDs derive from both) stay "defined by virtmix" and the
    domains stay the site's, instead of becoming `localhost` of a nameless site."""
    sites, hosts = set(), set()
    for item in items:
        meta = _metadata(item.xml)
        if meta.get("site") and not meta.get("parent"):
            sites.add(meta["site"])
            hosts.add(meta.get("host"))
    hosts.discard(None)
    return (next(iter(sites)) if len(sites) == 1 else None,
            next(iter(hosts)) if len(sites) == 1 and len(hosts) == 1 else None)


def inventory_document(host: str, uri: str, lxc_uri: str, cgroups: str,
                       items: list[Imported], site: str | None = None) -> dict[str, Any]:
    host_doc: dict[str, Any] = {"uri": uri, "lxc_uri": lxc_uri, "cgroups": cgroups}
    for kind in ("container", "guest"):
        entries = {i.name: i.entry for i in items if i.kind == kind}
        if entries:
            host_doc[kind + "s"] = entries
    doc: dict[str, Any] = {"site": site} if site else {}
    networks = {i.name: i.entry for i in items if i.kind == "network"}
    if networks:
        doc["networks"] = networks
    doc["hosts"] = {host: host_doc}
    return doc


def dump(doc: dict[str, Any], items: list[Imported], source: str) -> str:
    """The inventory YAML, with the notes as comments on top."""
    lines = [f"# Written by `virtmix import` from {source}.",
             "# Apply with --adopt to put the imported domains under virtmix's management."]
    for item in items:
        lines += [f"# {item.name}: {note}" for note in item.notes]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(lines) + "\n" + body


def check_roundtrip(text: str, items: list[Imported]) -> None:
    """Load the written inventory, render each imported domain and add a note for every
    owned field plan would still change (metadata aside). Raises on an invalid inventory."""
    from virtmix.converge.observe import owned_fields
    from virtmix.converge.plan import diff_fields
    from virtmix.converge.plan_xml import adapt_domain_xml
    from virtmix.inventory.load import load_site
    from virtmix.render.templates import render_domain

    with tempfile.TemporaryDirectory(prefix="virtmix-import-") as tmp:
        path = Path(tmp) / "imported.yaml"
        path.write_text(text)
        site = load_site(path)
        by_name = {e.name: e for e in site.entries}
        _check_networks(site, items)
        for item in items:
            if item.kind == "network":
                continue
            entry = by_name.get(item.name)
            if item.xml is None or entry is None:
                continue
            have = owned_fields(item.xml)
            uuid = parse_uuid(item.xml)
            want = owned_fields(adapt_domain_xml(render_domain(site, entry), uuid,
                                                 have.get("interfaces", ()), set()))
            for change in diff_fields(want, have):
                if change.field != "metadata":
                    item.notes.append(f"apply --adopt would still change {change.field}: "
                                      f"{change.before!r} -> {change.after!r}")


def _check_networks(site, items: list[Imported]) -> None:
    from virtmix.converge.observe import network_fields
    from virtmix.render.templates import render_network

    for item in items:
        if item.kind != "network" or item.xml is None:
            continue
        want, have = network_fields(render_network(site, item.name)), network_fields(item.xml)
        for key in ("mode", "bridge", "ipv4", "dhcp"):
            if want[key] != have[key] and not (key == "bridge" and want[key] is None):
                item.notes.append(f"apply --adopt would still change {key}: "
                                  f"{have[key]!r} -> {want[key]!r}")


def parse_uuid(xml: str) -> str:
    from lxml import etree

    return etree.fromstring(xml.encode()).findtext("uuid") or ""


def _uri_pair(uri: str) -> tuple[str, str]:
    """(qemu uri, lxc uri) of the host behind one of them: lxc+ssh://h/system ->
    (qemu+ssh://h/system, lxc+ssh://h/system)."""
    scheme, sep, rest = uri.partition(":")
    driver, plus, transport = scheme.partition("+")
    if driver.lower() not in ("lxc", "qemu"):  # schemes are case-insensitive (RFC 3986)
        return uri, uri
    tail = f"{plus}{transport}{sep}{rest}"
    return "qemu" + tail, "lxc" + tail


def collect(session: Session, names: set[str] | None, lxc_paths: list[Path],
            v2: bool, *, libvirt_domains: bool = True) -> tuple[str, str, str, list[Imported]]:
    """Import from the session's connections (unless libvirt_domains is False) and from
    classic LXC configs: (host name, uri, lxc_uri, entries)."""

    items: list[Imported] = []
    uris = [p.uri for p in session.places()]
    host = session.places()[0].host
    for _place, conn, rec in session.records() if libvirt_domains else ():
        if names is not None and rec.name not in names:
            continue
        if not rec.persistent:
            continue  # transient domains vanish when they stop: nothing to keep
        imp = from_domain(rec.xml, state=rec.state, autostart=conn.autostart(rec.name), v2=v2)
        if rec.managed:
            imp.notes.append(managed_note(rec.metadata))
        items.append(imp)
    owner_site, owner_host = described_owner(items)
    host = owner_host or host
    if libvirt_domains:
        items += _networks_of(session, items, host)
    from virtmix.admin.lxc_config import classic_containers

    for lxc_path in lxc_paths:
        taken = {(i.kind, i.name) for i in items}
        for ce in classic_containers(lxc_path, names):
            if ("container", ce.name) in taken:
                ce.notes.append("a libvirt domain or another config has this name; "
                                f"{lxc_path} skipped")
                continue
            items.append(Imported(ce.name, "container", ce.entry, ce.notes))
    if names:
        missing = names - {i.name for i in items}
        if missing:
            from virtmix.errors import NotFoundError

            where = (uris if libvirt_domains else []) + [str(p) for p in lxc_paths]
            raise NotFoundError(f"import: nothing named {', '.join(sorted(missing))} in "
                                f"{' or '.join(where)}")
    lxc_uri = next((u for u in uris if u.startswith("lxc")), None)
    qemu_uri = next((u for u in uris if u.startswith("qemu")), None)
    uri, derived_lxc = _uri_pair(qemu_uri or lxc_uri or "qemu:///system")
    return host, uri, lxc_uri or derived_lxc, items


def _networks_of(session: Session, items: list[Imported], host: str) -> list[Imported]:
    """The libvirt networks the imported interfaces use (the inventory must declare them)."""
    wanted = {i.get("network") for item in items for i in item.entry.get("interfaces", [])}
    wanted.discard(None)
    found: dict[str, Imported] = {}
    for _place, conn in session.reachable():
        for net in conn.list_networks():
            if net.name in wanted and net.name not in found:
                found[net.name] = network_entry(net.xml, host)
    for item in items:
        for iface in item.entry.get("interfaces", []):
            if iface.get("network") and iface["network"] not in found:
                item.notes.append(f"network {iface['network']} was not found; interface "
                                  "imported as a bridge of the same name")
                iface["bridge"] = iface.pop("network")
    return list(found.values())
