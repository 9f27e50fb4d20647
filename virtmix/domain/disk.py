"""<disk>: a guest's disk images."""

from __future__ import annotations

from dataclasses import dataclass

from virtmix.domain.xmlnode import Element


@dataclass
class Disk:
    path: str | None
    format: str | None
    bus: str | None
    device: str
    target: str | None = None


def read(root: Element) -> list[Disk]:
    out = []
    for node in root.findall("devices/disk"):
        src, drv, tgt = node.find("source"), node.find("driver"), node.find("target")
        out.append(Disk(src.get("file") or src.get("dev") if src is not None else None,
                        drv.get("type") if drv is not None else None,
                        tgt.get("bus") if tgt is not None else None,
                        node.get("device") or "disk",
                        tgt.get("dev") if tgt is not None else None))
    return out


def fields(disks: list[Disk]) -> tuple[tuple[str | None, ...], ...]:
    """The plan's form: disks proper (not cdroms), path, format, target, bus."""
    return tuple((d.path, d.format, d.target, d.bus) for d in disks if d.device == "disk")
