"""Build what the templates see: every decision and unit conversion happens here, in Python.

The templates receive one view per domain or network and only print it. Names follow
libvirt's vocabulary (memory_kib, cputune.shares, vcpu_cpuset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtmix.domain.tunables import to_libvirt
from virtmix.hosts import cgroup_version_where
from virtmix.inventory.addresses import dhcp_range
from virtmix.inventory.model import Container, Guest, Network, RootfsBuild, RootfsPath
from virtmix.inventory.site import Entry, Site, is_privileged
from virtmix.util import layout
from virtmix.util.identity import IDMAP, VIRTMIX_NS, domain_uuid, mac_address, network_uuid


@dataclass
class InterfaceView:
    kind: str  # "network" | "bridge"
    source: str
    mac: str
    guest_dev: str | None = None
    model: str | None = None
    ip: str | None = None
    prefix: int | None = None
    gateway: str | None = None


@dataclass
class DiskView:
    path: str
    format: str
    target: str
    bus: str
    device: str = "disk"  # disk | cdrom (read-only)


@dataclass
class DomainView:
    name: str
    kind: str
    uuid: str
    description: str | None
    memory_kib: int
    vcpus: int
    vcpu_cpuset: str | None
    cputune: dict[str, object]
    vcpupin: list[tuple[int, str]]
    emulatorpin: str | None
    memtune: dict[str, int]
    blkio_weight: int | None
    interfaces: list[InterfaceView]
    metadata: dict[str, str]
    ns: str = VIRTMIX_NS
    # containers
    rootfs: str | None = None
    init: list[str] = field(default_factory=list)
    idmap: tuple[int, int, int] | None = None  # (start, host uid, count)
    idmap_gid: int | None = None  # host gid of container gid `start`
    privnet: bool = False
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    # guests
    virt_type: str = "kvm"
    arch: str = "x86_64"
    machine: str | None = None
    disks: list[DiskView] = field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    serial_log: str | None = None


def storage_dir(site: Site) -> str:
    # Plain strings, not pathlib: building 11,000 paths with PurePosixPath cost ~0.3 s.
    return site.inventory.settings.storage_dir.rstrip("/") or "/"


def container_rootfs(site: Site, entry: Entry) -> str:
    spec = entry.spec
    assert isinstance(spec, Container)
    if isinstance(spec.rootfs, RootfsPath):
        return spec.rootfs.path
    return layout.container_tree(storage_dir(site), entry.name)


def _site_idmaps(site: Site) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(uri, name) -> id range of every unprivileged built container without `idmap:`.

    Computed once per site (plan, render and apply must agree): recorded ranges of the
    local storage directory stay as they are; the others get a slot from their name,
    probing past recorded, explicit and already assigned ranges of their id space.
    """
    cached = site.__dict__.get("_idmaps")
    if cached is not None and cached[0] == len(site.entries):
        return cached[1]
    from virtmix.hosts import is_local as hosts_is_local
    from virtmix.util.idranges import Allocator, isolated, recorded_ranges

    setting = site.inventory.settings.idmap

    recorded: dict[str, tuple[int, int, int, int]] | None = None
    spaces: dict[str, Allocator] = {}
    todo = []
    local: dict[str, bool] = {}  # is_local per URI (urlsplit per entry was a third of this)

    def is_local(uri: str) -> bool:
        known = local.get(uri)
        if known is None:
            known = local[uri] = hosts_is_local(uri)
        return known

    for e in site.entries:
        if e.kind != "container":
            continue
        space = f"guest:{e.parent}" if e.parent else f"host:{e.host}"
        if space not in spaces:
            spaces[space] = Allocator()
            if not e.parent and is_local(e.uri):
                if recorded is None:
                    recorded = recorded_ranges(storage_dir(site))
                for m in recorded.values():
                    spaces[space].take(m)
        if e.spec.idmap is not None:
            spaces[space].take(e.spec.idmap.as_tuple)
        elif isinstance(e.spec.rootfs, RootfsBuild) and not is_privileged(e):
            todo.append((space, e))
    out = {}
    own_by_version: dict[str, bool] = {}  # isolated() per cgroup version: it reads the env
    for space, e in sorted(todo, key=lambda t: t[1].name):
        mine = (recorded or {}).get(e.name) if not e.parent and is_local(e.uri) else None
        version = cgroup_version(site, e)
        own = own_by_version.get(version)
        if own is None:
            own = own_by_version[version] = isolated(setting, version)
        out[(e.uri, e.name)] = mine or (spaces[space].pick(e.name) if own
                                        else (*IDMAP, IDMAP[1]))
    site.__dict__["_idmaps"] = (len(site.entries), out)
    return out


def warm_site_caches(site: Site) -> None:
    """Compute what views share across a site (id ranges, static addresses) before rendering
    forks workers: each worker would otherwise compute it again for all entries (~0.5 s of
    CPU per worker for 85,000 containers)."""
    if any(e.kind == "container" for e in site.entries):
        _site_idmaps(site)
    if site.networks:
        _static_interfaces(site)


def container_idmap(site: Site, entry: Entry) -> tuple[int, int, int, int] | None:
    """(start 0, host uid, count, host gid) of an unprivileged container; None if privileged."""
    spec = entry.spec
    assert isinstance(spec, Container)
    if is_privileged(entry):
        return None
    if spec.idmap is not None:
        return spec.idmap.as_tuple
    if isinstance(spec.rootfs, RootfsPath):
        return (*IDMAP, IDMAP[1])
    return _site_idmaps(site)[(entry.uri, entry.name)]


def cgroup_version(site: Site, entry: Entry) -> str:
    """The cgroup version where the domain runs, as the inventory declares it (guests built
    by virtmix are pure v2: hosts.cgroup_version_where has the rule)."""
    if entry.parent:  # the rule needs no host: the guest is virtmix's own
        return cgroup_version_where("", entry.parent)
    return cgroup_version_where(entry.uri, None,
                                declared=site.inventory.hosts[entry.host].cgroups)


def shares_value(site: Site, entry: Entry) -> int | None:
    """<cputune><shares> as libvirt writes it: v1 shares, or a v2 cpu.weight on v2 hosts."""
    shares = entry.spec.cpu.shares
    if shares is None:
        return None
    return to_libvirt("cputune.shares", shares, cgroup_version(site, entry) == "v2")


def _interfaces(entry: Entry) -> list[InterfaceView]:
    out = []
    for i, iface in enumerate(entry.spec.interfaces):
        kind, source = ("network", iface.network) if iface.network else ("bridge", iface.bridge)
        view = InterfaceView(kind, source, iface.mac or mac_address(entry.uri, entry.name, i))
        if entry.kind == "container":
            view.guest_dev = iface.name or f"eth{i}"
            if iface.ipv4 is not None:
                view.ip, view.prefix = str(iface.ipv4.ip), iface.ipv4.network.prefixlen
                view.gateway = str(iface.gateway) if iface.gateway else None
        else:
            view.model = iface.model or "virtio"
        out.append(view)
    return out


def _common(site: Site, entry: Entry) -> DomainView:
    spec = entry.spec
    cpu = spec.cpu
    cputune: dict[str, object] = {}
    shares = shares_value(site, entry)
    if shares is not None:
        cputune["shares"] = shares
    if cpu.period is not None:
        cputune["period"] = cpu.period
    if cpu.quota is not None:
        cputune["quota"] = cpu.quota
    # The model's own field values (plain ints or None): what model_dump returns for this
    # flat model, without its serializer's cost per domain.
    memtune = {k: v for k, v in vars(spec.memtune).items() if v is not None}
    metadata = {
        "site": site.name, "inventory": str(site.path), "host": entry.host,
        "name": entry.name, "kind": entry.kind,
    }
    if entry.parent:
        metadata["parent"] = entry.parent
    if entry.profiles:
        metadata["profile"] = entry.profiles[0]
    if entry.placed:  # chosen by placement: the next plan reads it back and keeps it there
        metadata["placed"] = entry.placed
    return DomainView(
        name=entry.name, kind=entry.kind, uuid=domain_uuid(entry.uri, entry.name),
        description=spec.description, memory_kib=entry.memory_kib, vcpus=spec.vcpus,
        vcpu_cpuset=cpu.cpuset, cputune=cputune,
        vcpupin=sorted(cpu.vcpupin.items()), emulatorpin=cpu.emulatorpin,
        memtune=memtune, blkio_weight=spec.blkio.weight,
        interfaces=_interfaces(entry), metadata=metadata,
    )


def container_view(site: Site, entry: Entry) -> DomainView:
    spec = entry.spec
    assert isinstance(spec, Container)
    view = _common(site, entry)
    view.rootfs = container_rootfs(site, entry)
    view.init = list(spec.init)
    privileged = is_privileged(entry)
    idmap = container_idmap(site, entry)
    view.idmap = idmap[:3] if idmap else None
    view.idmap_gid = idmap[3] if idmap else None
    view.metadata["privileged"] = "true" if privileged else "false"
    if idmap is not None:  # the record beside the tree's state.json: never reshuffled
        view.metadata["idmap"] = f"{idmap[1]}:{idmap[3]}:{idmap[2]}"
    # A container without an interface still gets its own network namespace: sharing the
    # host's would let its init reconfigure host interfaces, and libvirt refuses an idmap
    # without one ("Unable to create directory /sys/fs/cgroup: Read-only file system").
    view.privnet = not spec.interfaces
    view.mounts = [(m.source, m.target, m.readonly) for m in spec.mounts]
    return view


SEED_ISO = "seed.iso"  # a guest's cloud-init seed (virtmix.rootfs.cloudinit)


def guest_view(site: Site, entry: Entry) -> DomainView:
    spec = entry.spec
    assert isinstance(spec, Guest)
    view = _common(site, entry)
    host = site.inventory.hosts[entry.host]
    view.virt_type = spec.virt_type or host.virt_type
    view.arch, view.machine = spec.arch, spec.machine
    gdir = layout.guest_path(storage_dir(site), entry.name)
    disks: list[DiskView] = []
    if spec.image is not None or spec.containers:
        image = spec.image
        # The root disk is a copy-on-write overlay over the cached or given base image.
        disks.append(DiskView(f"{gdir}/root.qcow2", "qcow2", "vda", "virtio"))
        if (image is None or not image.given) and spec.boot is None:
            # Images virtmix builds boot their own kernel directly (no bootloader to install).
            view.kernel, view.initrd = f"{gdir}/vmlinuz", f"{gdir}/initrd.img"
            view.cmdline = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    for i, disk in enumerate(spec.disks):
        path = disk.path or f"{gdir}/disk{i}.{disk.format}"
        target = ("vd" if disk.bus == "virtio" else "sd") + chr(ord("a") + len(disks))
        disks.append(DiskView(path, disk.format, target, disk.bus))
    if spec.image is not None and spec.image.given:
        # cloud-init's NoCloud seed (label cidata); i440fx has IDE, q35 only SATA.
        bus = "sata" if "q35" in (spec.machine or "") else "ide"
        disks.append(DiskView(f"{gdir}/{SEED_ISO}", "raw", "sdz" if bus == "sata" else "hdd",
                              bus, "cdrom"))
    view.disks = disks
    if spec.boot is not None:
        boot = spec.boot
        view.kernel, view.initrd, view.cmdline = boot.kernel, boot.initrd, boot.cmdline
    view.serial_log = f"{gdir}/serial.log"
    return view


def domain_view(site: Site, entry: Entry) -> DomainView:
    return container_view(site, entry) if entry.kind == "container" else guest_view(site, entry)


@dataclass
class ExecuteView:
    """The transient container of `virtmix execute` (virtmix.admin.execute)."""

    name: str
    memory_kib: int
    init: list[str]
    mounts: list[tuple[str, str, bool]]  # source, target, read-only


@dataclass
class NetworkView:
    name: str
    uuid: str
    mode: str
    bridge: str | None
    address: str | None = None
    netmask: str | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    dhcp_hosts: list[tuple[str, str, str]] = field(default_factory=list)  # mac, name, ip
    dns_hosts: list[tuple[str, str]] = field(default_factory=list)  # ip, name


def network_view(site: Site, name: str, net: Network) -> NetworkView:
    view = NetworkView(name, network_uuid(site.name, net.host, name), net.mode, net.bridge)
    if net.mode == "bridge" or net.ipv4 is None:
        return view
    view.address, view.netmask = str(net.ipv4.ip), str(net.ipv4.netmask)
    # Every entry with a static address on this network is a name in its dnsmasq, so
    # containers and guests find each other by name.
    # (From the per-site index of static addresses: a scan of every entry per network was
    # 0.2 s for 85,000 containers.)
    view.dns_hosts = sorted({(str(iface.ipv4.ip), e.name)
                             for e, _i, iface in _static_interfaces(site).get(name, ())
                             if not (e.parent and net.host != e.parent)})
    if net.dhcp:
        start, end = dhcp_range(net)
        view.dhcp_start, view.dhcp_end = str(start), str(end)
        for e, i, iface in _static_interfaces(site).get(name, ()):
            if not (e.parent and net.host != e.parent):
                mac = iface.mac or mac_address(e.uri, e.name, i)
                view.dhcp_hosts.append((mac, e.name, str(iface.ipv4.ip)))
    return view


def _static_interfaces(site: Site) -> dict[str, list]:
    """network name -> (entry, index, interface) with a static ipv4, made once per site
    (kept on it): a scan of every entry per network made many networks quadratic."""
    index = getattr(site, "_static_interfaces", None)
    if index is None or index[0] != len(site.entries):
        table: dict[str, list] = {}
        for e in site.entries:
            for i, iface in enumerate(e.spec.interfaces):
                if iface.network is not None and iface.ipv4 is not None:
                    table.setdefault(iface.network, []).append((e, i, iface))
        index = (len(site.entries), table)
        site._static_interfaces = index  # type: ignore[attr-defined]
    return index[1]
