"""<os>: a container's init and arguments, a guest's machine type and direct kernel boot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtmix.domain.xmlnode import Element


@dataclass
class OsBoot:
    init: str | None = None
    initargs: list[str] = field(default_factory=list)
    arch: str | None = None
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


_TEXT = ("init", "kernel", "initrd", "cmdline")


def read(root: Element) -> OsBoot:
    out = OsBoot()
    os_ = root.find("os")
    if os_ is None:
        return out
    for node in os_:  # one pass over the children (plans read thousands of documents)
        tag = node.tag
        if tag == "type":
            out.arch, out.machine = node.get("arch"), node.get("machine")
        elif tag == "initarg":
            out.initargs.append(node.text or "")
        elif tag in _TEXT:
            value = node.text.strip() if node.text else None
            setattr(out, tag, value or None)
    return out


def fields(boot: OsBoot, lxc: bool, out: dict[str, Any]) -> None:
    if lxc:
        out["os.init"] = boot.init
        out["os.initargs"] = tuple(boot.initargs)
        return
    out["os.arch"], out["os.machine"] = boot.arch, boot.machine
    out["os.kernel"], out["os.initrd"], out["os.cmdline"] = boot.kernel, boot.initrd, \
        boot.cmdline
