"""<filesystem>: a container's root tree and bind mounts."""

from __future__ import annotations

from dataclasses import dataclass

from virtmix.domain.xmlnode import Element


@dataclass
class Filesystem:
    source: str
    target: str
    readonly: bool
    type: str = "mount"


def read(root: Element) -> list[Filesystem]:
    out = []
    for node in root.iterfind("devices/filesystem"):
        src, dst = node.find("source"), node.find("target")
        if src is None or dst is None:
            continue
        source = src.get("dir") or src.get("file") or src.get("name") or ""
        out.append(Filesystem(source, dst.get("dir") or "", node.find("readonly") is not None,
                              node.get("type", "mount")))
    return out


def fields(filesystems: list[Filesystem]) -> tuple[tuple[str, str, bool], ...]:
    """The plan's form: the mount-type filesystems (source dir, target, read-only)."""
    return tuple((f.source, f.target, f.readonly) for f in filesystems if f.type == "mount")


def root_tree(root: Element) -> str | None:
    """The directory mounted at / (a container's tree), if any."""
    return next((f.source for f in read(root) if f.target == "/"), None)
