"""Domain XML known to work on the project's hosts (docs/working-xml.md), for live tests."""

from __future__ import annotations

from pathlib import Path

from lxml import etree
from lxml.builder import E


def _text(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def busybox_lxc_xml(
    name: str,
    root: Path,
    *,
    idmap_base: int | None = None,
    privnet: bool = True,
    memory_kib: int = 65536,
    init: str = "/sbin/init",
) -> str:
    """An LXC domain running init from the tree at root.

    privnet gives the container its own network namespace (without it, it shares the
    host's); idmap_base maps container uid/gid 0..65535 to idmap_base.. and needs a tree
    built with --shift idmap_base and privnet (libvirt refuses otherwise).
    """
    dom = E.domain(
        E.name(name),
        E.memory(str(memory_kib), unit="KiB"),
        E.vcpu("1"),
        E.os(E.type("exe"), E.init(init)),
        type="lxc",
    )
    if idmap_base is not None:
        dom.append(
            E.idmap(
                E.uid(start="0", target=str(idmap_base), count="65536"),
                E.gid(start="0", target=str(idmap_base), count="65536"),
            )
        )
    if privnet:
        dom.append(E.features(E.privnet()))
    dom.append(
        E.devices(
            E.filesystem(
                E.source(dir=str(root)), E.target(dir="/"), type="mount", accessmode="passthrough"
            ),
            # The LXC driver refuses a domain without a pty console.
            E.console(type="pty"),
        )
    )
    return _text(dom)


def guest_qemu_xml(
    name: str,
    vmlinuz: Path,
    initrd: Path,
    serial_log: Path,
    *,
    cmdline_extra: str = "",
    memory_mib: int = 256,
) -> str:
    """A TCG (type='qemu') guest booting vmlinuz+initrd directly, serial console to a file.

    type='kvm' hangs on the nested test hosts; <acpi/> lets a guest poweroff end the domain.
    """
    cmdline = f"console=ttyS0 panic=-1 {cmdline_extra}".strip()
    dom = E.domain(
        E.name(name),
        E.memory(str(memory_mib), unit="MiB"),
        E.vcpu("1"),
        E.os(
            E.type("hvm", arch="x86_64", machine="pc"),
            E.kernel(str(vmlinuz)),
            E.initrd(str(initrd)),
            E.cmdline(cmdline),
        ),
        E.features(E.acpi()),
        E.on_reboot("destroy"),
        E.devices(
            E.serial(E.source(path=str(serial_log)), E.target(port="0"), type="file"),
            E.memballoon(model="none"),
        ),
        type="qemu",
    )
    return _text(dom)
