"""Read the settings virtmix knows out of any domain's XML (virsh- or virtmix-defined)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

# libvirt's <memory unit=...> units -> KiB factor (libvirt normalises to KiB, others may not).
_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
             "m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2,
             "gb": 1000**3 / 1024, "t": 1024**3, "tib": 1024**3}


def size_kib(node: etree._Element | None) -> int | None:
    if node is None or not (node.text or "").strip():
        return None
    unit = (node.get("unit") or "KiB").lower()
    return int(round(int(node.text.strip()) * _UNIT_KIB.get(unit, 1)))


def _int(node: etree._Element | None) -> int | None:
    return int(node.text.strip()) if node is not None and (node.text or "").strip() else None


@dataclass
class Iface:
    kind: str  # network | bridge | other
    source: str | None
    mac: str | None
    guest_dev: str | None = None
    model: str | None = None
    ipv4: str | None = None  # a.b.c.d/prefix
    gateway: str | None = None


@dataclass
class Filesystem:
    source: str
    target: str
    readonly: bool


@dataclass
class Disk:
    path: str
    format: str | None
    bus: str | None
    device: str


@dataclass
class DomainSettings:
    """What `ls`, `info` and `import` show of a definition."""

    name: str
    type: str  # lxc, kvm, qemu
    memory_kib: int | None
    vcpus: int
    vcpu_cpuset: str | None
    cputune: dict[str, int] = field(default_factory=dict)  # shares, period, quota
    vcpupin: dict[int, str] = field(default_factory=dict)
    emulatorpin: str | None = None
    memtune: dict[str, int] = field(default_factory=dict)  # KiB
    blkio_weight: int | None = None
    interfaces: list[Iface] = field(default_factory=list)
    filesystems: list[Filesystem] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    idmap: tuple[int, int, int] | None = None
    idmap_gid: int | None = None  # host gid of container gid 0
    privnet: bool = False
    description: str | None = None
    arch: str | None = None
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None

    @property
    def rootfs(self) -> str | None:
        return next((f.source for f in self.filesystems if f.target == "/"), None)


def _interfaces(tree: etree._Element) -> list[Iface]:
    out = []
    for node in tree.findall("devices/interface"):
        src = node.find("source")
        kind = node.get("type")
        source = None
        if src is not None:
            source = src.get("network") if kind == "network" else src.get("bridge")
        mac = node.find("mac")
        iface = Iface(kind if kind in ("network", "bridge") else "other", source,
                      mac.get("address") if mac is not None else None)
        gdev, model = node.find("guest"), node.find("model")
        iface.guest_dev = gdev.get("dev") if gdev is not None else None
        iface.model = model.get("type") if model is not None else None
        ip = node.find("ip[@family='ipv4']")
        if ip is None:
            ip = next((i for i in node.findall("ip") if ":" not in (i.get("address") or "")),
                      None)
        if ip is not None and ip.get("address"):
            iface.ipv4 = f"{ip.get('address')}/{ip.get('prefix') or 24}"
        route = node.find("route[@gateway]")
        iface.gateway = route.get("gateway") if route is not None else None
        out.append(iface)
    return out


def _storage(tree: etree._Element, s: DomainSettings) -> None:
    for node in tree.findall("devices/filesystem"):
        src, dst = node.find("source"), node.find("target")
        if src is None or dst is None:
            continue
        source = src.get("dir") or src.get("file") or src.get("name") or ""
        s.filesystems.append(Filesystem(source, dst.get("dir") or "",
                                        node.find("readonly") is not None))
    for node in tree.findall("devices/disk"):
        src, drv, tgt = node.find("source"), node.find("driver"), node.find("target")
        path = src.get("file") or src.get("dev") if src is not None else None
        if path:
            s.disks.append(Disk(path, drv.get("type") if drv is not None else None,
                                tgt.get("bus") if tgt is not None else None,
                                node.get("device") or "disk"))


def _tuning(tree: etree._Element, s: DomainSettings) -> None:
    for key in ("shares", "period", "quota"):
        value = _int(tree.find(f"cputune/{key}"))
        if value is not None:
            s.cputune[key] = value
    for pin in tree.findall("cputune/vcpupin"):
        s.vcpupin[int(pin.get("vcpu"))] = pin.get("cpuset")
    emu = tree.find("cputune/emulatorpin")
    s.emulatorpin = emu.get("cpuset") if emu is not None else None
    for key in ("hard_limit", "soft_limit", "swap_hard_limit", "min_guarantee"):
        value = size_kib(tree.find(f"memtune/{key}"))
        if value is not None:
            s.memtune[key] = value
    s.blkio_weight = _int(tree.find("blkiotune/weight"))


def parse_domain(xml: str | etree._Element) -> DomainSettings:
    tree = etree.fromstring(xml.encode()) if isinstance(xml, str) else xml
    vcpu = tree.find("vcpu")
    s = DomainSettings(
        name=tree.findtext("name") or "", type=tree.get("type") or "",
        memory_kib=size_kib(tree.find("memory")),
        vcpus=_int(vcpu) or 1, vcpu_cpuset=vcpu.get("cpuset") if vcpu is not None else None,
        description=tree.findtext("description"),
    )
    _tuning(tree, s)
    s.interfaces = _interfaces(tree)
    _storage(tree, s)
    init = tree.findtext("os/init")
    if init:
        s.init = [init] + [a.text or "" for a in tree.findall("os/initarg")]
    uid, gid = tree.find("idmap/uid"), tree.find("idmap/gid")
    if uid is not None:
        s.idmap = (int(uid.get("start")), int(uid.get("target")), int(uid.get("count")))
    if gid is not None:
        s.idmap_gid = int(gid.get("target"))
    s.privnet = tree.find("features/privnet") is not None
    ostype = tree.find("os/type")
    if ostype is not None:
        s.arch, s.machine = ostype.get("arch"), ostype.get("machine")
    s.kernel, s.initrd = tree.findtext("os/kernel"), tree.findtext("os/initrd")
    s.cmdline = tree.findtext("os/cmdline")
    return s
