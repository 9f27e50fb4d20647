"""A whole domain document -> what `ls`, `info`, `cgroup` and `import` show of it.

Any domain, virtmix-defined or not; read by the same element modules as the plan's fields
(virtmix.domain.fields), kept in the shapes the admin verbs print.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtmix.domain import blkiotune, cputune, disk, filesystem, idmap, interface, memtune
from virtmix.domain import os as os_mod
from virtmix.domain.disk import Disk
from virtmix.domain.filesystem import Filesystem
from virtmix.domain.interface import Iface
from virtmix.domain.xmlnode import Element, parse

__all__ = ["DomainSettings", "Disk", "Filesystem", "Iface", "parse_domain"]


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


def parse_domain(xml: str | bytes | Element) -> DomainSettings:
    root = parse(xml)
    ct = cputune.read(root)
    boot = os_mod.read(root)
    return DomainSettings(
        name=root.findtext("name") or "", type=root.get("type") or "",
        memory_kib=memtune.memory_kib(root), vcpus=ct.vcpus or 1, vcpu_cpuset=ct.cpuset,
        cputune=ct.sched, vcpupin=ct.vcpupin, emulatorpin=ct.emulatorpin,
        memtune=memtune.read(root), blkio_weight=blkiotune.weight(root),
        interfaces=interface.read(root),
        filesystems=filesystem.read(root),
        disks=[d for d in disk.read(root) if d.path],
        init=[boot.init, *boot.initargs] if boot.init else [],
        idmap=idmap.read(root), idmap_gid=idmap.gid_target(root),
        privnet=root.find("features/privnet") is not None,
        description=root.findtext("description"),
        arch=boot.arch, machine=boot.machine, kernel=boot.kernel, initrd=boot.initrd,
        cmdline=boot.cmdline)
