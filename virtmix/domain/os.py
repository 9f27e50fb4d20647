"""<os>: a container's init and arguments, a guest's machine type and direct kernel boot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtmix.domain.xmlnode import Element, text


@dataclass
class OsBoot:
    init: str | None = None
    initargs: list[str] = field(default_factory=list)
    arch: str | None = None
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


def read(root: Element) -> OsBoot:
    ostype = root.find("os/type")
    return OsBoot(
        init=text(root, "os/init"),
        initargs=[a.text or "" for a in root.findall("os/initarg")],
        arch=ostype.get("arch") if ostype is not None else None,
        machine=ostype.get("machine") if ostype is not None else None,
        kernel=text(root, "os/kernel"), initrd=text(root, "os/initrd"),
        cmdline=text(root, "os/cmdline"))


def fields(boot: OsBoot, lxc: bool, out: dict[str, Any]) -> None:
    if lxc:
        out["os.init"] = boot.init
        out["os.initargs"] = tuple(boot.initargs)
        return
    out["os.arch"], out["os.machine"] = boot.arch, boot.machine
    out["os.kernel"], out["os.initrd"], out["os.cmdline"] = boot.kernel, boot.initrd, \
        boot.cmdline
