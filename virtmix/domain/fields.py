"""A whole domain document -> the flat fields virtmix owns (what plans compare).

libvirt normalises what it is given (units, UUIDs, added defaults, runtime devices), so plans
compare these fields, never XML text. The same function reads the XML virtmix renders and
the XML libvirt returns, so both sides of a comparison come out of one reader. Each element
is read by its own module; field names are the rows of virtmix.domain.tunables.
"""

from __future__ import annotations

from typing import Any

from virtmix.domain import blkiotune, cputune, disk, filesystem, idmap, interface, memtune
from virtmix.domain import metadata as meta_mod
from virtmix.domain import os as os_mod
from virtmix.domain.metadata import INFO_ONLY
from virtmix.domain.xmlnode import Element, parse, text

Fields = dict[str, Any]


def owned_fields(xml: str | bytes | Element) -> Fields:
    """The fields virtmix owns, from a domain document (rendered, inactive or live)."""
    root = parse(xml)
    lxc = root.get("type") == "lxc"
    meta = meta_mod.read(root)
    out: Fields = {
        "type": root.get("type"),
        "description": text(root, "description"),
        # The inventory's path is information only: moving the file changes nothing owned.
        "metadata": (tuple(sorted((k, v) for k, v in meta.items() if k not in INFO_ONLY))
                     if meta is not None else None),
    }
    memtune.fields(root, out)
    cputune.fields(cputune.read(root), out)
    blkiotune.fields(root, out)
    out["interfaces"] = interface.fields(interface.read(root), lxc)
    os_mod.fields(os_mod.read(root), lxc, out)
    if lxc:
        uids = idmap.read(root)  # with the gid target: a classic lxc.idmap may differ
        out["idmap"] = (*uids, idmap.gid_target(root)) if uids is not None else None
        out["privnet"] = root.find("features/privnet") is not None
        out["filesystems"] = filesystem.fields(filesystem.read(root))
    else:
        out["disks"] = disk.fields(disk.read(root))
        log = root.find("devices/serial/log")
        out["serial_log"] = log.get("file") if log is not None else None
    return out
