"""`virtmix explain`: how each setting of one entry maps onto libvirt, and where it came from.

Pure: takes a Site and an Entry, returns rows and warnings. The CLI prints them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from virtmix.domain.tunables import BY_FIELD, TUNABLES, shares_to_weight
from virtmix.inventory.model import Container, Guest, RootfsPath
from virtmix.inventory.site import is_privileged
from virtmix.render.views import (
    cgroup_version,
    container_idmap,
    container_rootfs,
    shares_value,
)
from virtmix.util.identity import IDMAP_OFFSET
from virtmix.util.units import format_kib


@dataclass
class Row:
    setting: str
    value: str
    source: str     # "entry", "profile NAME", "default"
    libvirt: str    # the XML element (or API) it becomes
    note: str = ""


def _source(site, entry, keypath: tuple[str, ...]) -> str:
    """Which layer set `keypath`: the entry itself, a profile of its chain, or a default."""
    def has(tree: Any, path: tuple[str, ...]) -> bool:
        for part in path:
            if isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
                tree = tree[int(part)]  # interfaces.0, disks.1
            elif isinstance(tree, dict) and part in tree:
                tree = tree[part]
            elif isinstance(tree, dict) and part.isdigit() and int(part) in tree:
                tree = tree[int(part)]  # vcpupin: {0: "0"} has YAML int keys
            else:
                return False
        return True

    if has(site.own_settings.get(entry.keypath, {}), keypath):
        return "entry"
    for name in entry.profiles:
        prof = site.profiles.get(name, used_at=(str(site.path), entry.keypath))
        if has(prof.settings, keypath):
            return f"profile {name}"
    host = site.inventory.hosts[entry.host]
    if not entry.parent and len(keypath) == 1 and keypath[0] in host.model_fields_set:
        return f"host {entry.host}"  # e.g. virt_type, set once for the host's guests
    return "default"


def _cgroups(row: Any) -> str:
    """Where the kernel keeps a setting: `cpu.cfs_period_us (v1) / ... (v2)`."""
    return f"{row.cgroup_v1} (v1) / {row.cgroup_v2} (v2)"


def explain_entry(site, entry) -> tuple[list[Row], list[str]]:
    spec = entry.spec
    is_ct = isinstance(spec, Container)
    rows: list[Row] = []
    warnings: list[str] = []

    def add(keypath: tuple[str, ...], value: Any, element: str, note: str = "") -> None:
        rows.append(Row(".".join(keypath), str(value), _source(site, entry, keypath), element,
                        note))

    version = cgroup_version(site, entry)
    mem = BY_FIELD["memory_kib"]
    add(("memory",), format_kib(entry.memory_kib), mem.element[:-1] + " unit='KiB'>",
        f"the container's memory cgroup limit ({_cgroups(mem)}) unless memtune.hard_limit "
        "is set; changed live" if is_ct else "guest RAM (also <currentMemory>)")
    add(("vcpus",), spec.vcpus, BY_FIELD["vcpus"].element,
        "informational for LXC: limit CPU with cpu.cpuset or cpu.quota" if is_ct else
        "virtual CPUs of the guest")
    if is_ct and spec.vcpus > 1:
        warnings.append("vcpus has no effect on a container (libvirt's LXC driver does not "
                        "limit CPUs by count); use cpu.cpuset or cpu.quota")
    cpu = spec.cpu
    if cpu.cpuset:
        add(("cpu", "cpuset"), cpu.cpuset, BY_FIELD["vcpu_cpuset"].element,
            "written to the container's cpuset cgroup (cpuset.cpus)" if is_ct else
            "default host CPUs for all vCPU threads")
    if cpu.shares is not None:
        weight = shares_to_weight(cpu.shares)
        note = (f"cgroup v1: cpu.shares={cpu.shares} (default 1024); cgroup v2: "
                f"cpu.weight={weight} (default 100, weight = shares x 100 / 1024). "
                f"This host is {version}: virtmix writes {shares_value(site, entry)}")
        add(("cpu", "shares"), cpu.shares, BY_FIELD["cputune.shares"].element, note)
    if cpu.period is not None:
        row = BY_FIELD["cputune.period"]
        add(("cpu", "period"), cpu.period, row.element, _cgroups(row))
    if cpu.quota is not None:
        row = BY_FIELD["cputune.quota"]
        add(("cpu", "quota"), cpu.quota, row.element, f"{_cgroups(row)}; -1 = no limit")
        if cpu.period is None:
            warnings.append("cpu.quota without cpu.period: the kernel's default period "
                            "(100000 us) applies")
    for vcpu, cpus in sorted(cpu.vcpupin.items()):
        pin = BY_FIELD["cputune.vcpupin"].element
        add(("cpu", "vcpupin", str(vcpu)), cpus, pin[:-1] + f" vcpu='{vcpu}'>")
    if cpu.emulatorpin:
        add(("cpu", "emulatorpin"), cpu.emulatorpin, BY_FIELD["cputune.emulatorpin"].element)
    mt = spec.memtune
    for row in (r for r in TUNABLES if r.section == "memtune"):
        key = row.key
        value = getattr(mt, key)
        if value is None:
            continue
        note = row.cgroup_v1 if row.cgroup_v1 == row.cgroup_v2 else \
            f"{row.cgroup_v1} / {row.cgroup_v2}"
        if key == "hard_limit" and is_ct:
            note += "; removing it returns the limit to memory"
        add(("memtune", key), format_kib(value), row.element, note)
        if key == "min_guarantee":
            warnings.append("memtune.min_guarantee has no effect with the QEMU and LXC drivers "
                            "(libvirt supports it for VMware ESX and OpenVZ only)")
        elif value > entry.memory_kib and key != "swap_hard_limit":
            warnings.append(f"memtune.{key} ({format_kib(value)}) is above memory "
                            f"({format_kib(entry.memory_kib)}), so it never applies")
    if spec.blkio.weight is not None:
        row = BY_FIELD["blkio.weight"]
        add(("blkio", "weight"), spec.blkio.weight, row.element,
            f"{_cgroups(row)}; only honoured by a proportional I/O scheduler (BFQ) on the "
            "device")
    for i, iface in enumerate(spec.interfaces):
        kind = "network" if iface.network else "bridge"
        add(("interfaces", str(i)), f"{kind} {iface.network or iface.bridge}",
            f"<interface type='{kind}'>")
        if iface.ipv4 is not None:
            add(("interfaces", str(i), "ipv4"), iface.ipv4,
                "<interface><ip> (libvirt configures it inside the container)" if is_ct else
                "<dhcp><host> in the network; the guest's own config sets it statically")
            if rows[-1].source == "default":  # virtmix.inventory.addresses picked it
                rows[-1].source = "picked by virtmix"
                rows[-1].note = ("derived from the guest's name, below the network's DHCP "
                                 "range; set ipv4 to choose another")
    if is_ct:
        _explain_container(site, entry, spec, add, warnings)
    else:
        _explain_guest(site, entry, spec, add, warnings)
    add(("state",), spec.state, "virDomainCreate / virDomainShutdown (apply)")
    add(("autostart",), spec.autostart, "virDomainSetAutostart")
    return rows, warnings


def _explain_container(site, entry, spec: Container, add, warnings: list[str]) -> None:
    path = container_rootfs(site, entry)
    if isinstance(spec.rootfs, RootfsPath):
        add(("rootfs", "path"), path, "<filesystem type='mount'><source dir>",
            "an existing tree, used as it is")
    else:
        r = spec.rootfs
        add(("rootfs",), f"{r.distro} {r.suite} {r.variant}"
            + (f" + {', '.join(r.packages)}" if r.packages else ""),
            "<filesystem type='mount'><source dir>", f"built and cloned to {path}")
        from virtmix.rootfs.from_model import default_nameservers

        servers = default_nameservers(spec, site.inventory.networks)
        add(("dns",), ", ".join(servers) or "none", "/etc/resolv.conf of the built tree",
            "" if spec.dns else "the network's dnsmasq (libvirt)" if servers else
            "no resolver: set dns, or put the first interface on an inventory network "
            "with ipv4")
    add(("init",), " ".join(spec.init), "<os><init>/<initarg>")
    privileged = is_privileged(entry)
    idmap = container_idmap(site, entry)
    add(("privileged",), privileged, "<idmap> absent" if privileged or idmap is None else
        f"<idmap> uid 0 -> {idmap[1]}, gid 0 -> {idmap[3]} ({idmap[2]} ids)")
    if idmap is not None:
        add(("idmap",), f"uid {idmap[1]}, gid {idmap[3]}, count {idmap[2]}", "<idmap>",
            "set in the inventory" if spec.idmap is not None else
            "given tree: the shared range 100000" if isinstance(spec.rootfs, RootfsPath)
            else f"the shared range {IDMAP_OFFSET}: settings.idmap "
            f"{site.inventory.settings.idmap or 'auto'} on a cgroup v1 host (its containers "
            "share one name=systemd tree)" if idmap[1] == IDMAP_OFFSET
            else "a range of its own, chosen from its name (recorded once built)")
    if privileged:
        warnings.append("the container runs privileged (root inside is root on the host)"
                        + (": a given rootfs path is used as it is; set privileged: false "
                           f"once the tree is owned by uid {IDMAP_OFFSET}" if
                           isinstance(spec.rootfs, RootfsPath) else ""))
    if not spec.interfaces:
        add(("interfaces",), "none", "<features><privnet/>",
            "a private network namespace with only loopback")


def _explain_guest(site, entry, spec: Guest, add, warnings: list[str]) -> None:
    host = site.inventory.hosts[entry.host]
    vt = spec.virt_type or host.virt_type
    add(("virt_type",), vt, f"<domain type='{vt}'>",
        "software emulation (TCG), slow" if vt == "qemu" else "hardware virtualisation")
    for i, disk in enumerate(spec.disks):
        add(("disks", str(i)), format_kib(disk.size) if disk.size else disk.path,
            "<disk type='file'>")
    if spec.containers:
        add(("containers",), ", ".join(spec.containers), "domains on the guest's own libvirt",
            f"reached at {entry_uri_of_children(site, entry)}")


def entry_uri_of_children(site, entry) -> str:
    kids = site.children(entry.name)
    return kids[0].uri if kids else "-"


def rows_as_dicts(rows: list[Row]) -> list[dict[str, str]]:
    return [asdict(r) for r in rows]
