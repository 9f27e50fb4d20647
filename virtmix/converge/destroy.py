"""Stop and undefine what virtmix made: an inventory's domains and networks, or named domains.

A domain without virtmix's metadata (or belonging to another site) is never touched unless
the caller forces it. Root filesystems and disk images are deleted only when asked, and
only those virtmix itself created under its storage directory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtmix.converge.observe import dns_hosts, is_local_uri, parse_xml
from virtmix.errors import NotFoundError, VirtmixError
from virtmix.inventory.site import Site
from virtmix.util import layout
from virtmix.util.identity import network_uuid

GUEST_FILES = ("root.qcow2", "serial.log", "vmlinuz", "initrd.img", "seed.iso", "host_key",
               "host_key.pub")


@dataclass
class Target:
    """One domain or network destroy would remove, and what it found about it."""

    name: str
    address: str
    uri: str
    network: bool = False
    exists: bool = True
    active: bool = False
    foreign: str = ""        # why virtmix does not own it ('' when it does)
    owns_tree: bool = False  # made by `virtmix create`: its tree goes with it (lxc-destroy)
    xml: str = ""
    result: str = ""         # what happened: removed | absent | refused | failed: ...


def _owner_problem(metadata: dict[str, str] | None, site: str | None) -> str:
    if metadata is None:
        return "no virtmix metadata (not defined by virtmix)"
    if site is not None and metadata.get("site") != site:
        if metadata.get("site") is None and metadata.get("created-by"):
            return f"made by `virtmix {metadata['created-by']}`, not by this inventory"
        return f"belongs to virtmix site {metadata.get('site')!r}"
    return ""


def domain_target(conn: Any, name: str, address: str, site: str | None) -> Target:
    try:
        rec = conn.get(name)
    except NotFoundError:
        return Target(name, address, conn.uri, exists=False)
    return Target(name, address, conn.uri, active=rec.active, xml=rec.xml,
                  foreign=_owner_problem(rec.metadata, site),
                  owns_tree=(rec.metadata or {}).get("created-by") == "create")


def site_targets(site: Site, conns: dict[str, Any], networks: dict[str, str]) -> list[Target]:
    """Every entry of the site (nested containers first, then hosts', guests), then networks."""
    out: list[Target] = []
    order = sorted(site.entries, key=lambda e: (0 if e.parent else 1 if e.kind == "container"
                                                 else 2))
    for e in order:
        conn = conns.get(e.uri)
        if not hasattr(conn, "get"):  # None, or the error met while connecting/reading
            out.append(Target(e.name, e.address, e.uri, exists=False,
                              result=f"failed: {conn or f'no connection to {e.uri}'}"))
            continue
        out.append(domain_target(conn, e.name, e.address, site.name))
    for name, uri in networks.items():
        conn = conns.get(uri)
        target = Target(name, name, uri, network=True, exists=False)
        if hasattr(conn, "list_networks"):
            for rec in conn.list_networks():
                if rec.name == name:
                    target.exists, target.active = True, rec.active
                    if rec.uuid != network_uuid(site.networks[name].host, name):
                        target.foreign = "its UUID is not virtmix's (not defined by virtmix)"
        out.append(target)
    return out


def _rootfs_dirs(xml: str) -> list[Path]:
    """Directories virtmix created for a domain: its built tree's or its guest files' dir."""
    root = parse_xml(xml)
    out = []
    for fs in root.findall("devices/filesystem"):
        src, tgt = fs.find("source"), fs.find("target")
        if src is None or tgt is None or tgt.get("dir") != "/":
            continue
        tree = Path(src.get("dir", ""))
        if tree.name == "rootfs" and tree.parent.parent.name == "containers":
            out.append(tree.parent)
    for disk in root.findall("devices/disk/source"):
        path = Path(disk.get("file") or "")
        if path.parent.parent.name == "guests":
            out.append(path.parent)
    return list(dict.fromkeys(out))


def delete_files(name: str, xml: str) -> list[str]:
    """Delete the built tree / guest files virtmix made for `name`; returns what went."""
    removed = []
    for d in _rootfs_dirs(xml):
        if d.name != name:
            continue
        if d.parent.name == "containers":
            from virtmix.rootfs import Storage, remove_container_tree
            from virtmix.rootfs.storage import CONTAINER_MARKER

            if (d / CONTAINER_MARKER).is_file():
                remove_container_tree(Storage(d.parent.parent), name)
                removed.append(str(d))
        elif (d / ".virtmix-guest").is_file():  # made by virtmix.images: keys, pin too
            from virtmix.images.guest import remove_guest_dir
            from virtmix.rootfs import Storage

            remove_guest_dir(Storage(d.parent.parent), name)
            removed.append(str(d))
        elif (d / layout.GUEST_FILES_MARKER).is_file():  # made by prepare: disks by size
            for f in d.iterdir():
                if f.name in GUEST_FILES or f.name.startswith("disk"):
                    f.unlink()
            (d / layout.GUEST_FILES_MARKER).unlink()
            with contextlib.suppress(OSError):
                d.rmdir()
            removed.append(str(d))
        # else: a directory virtmix did not make (an admin's own */guests/NAME/disk*): kept
    return removed


def forget_names(conn: Any, name: str, xml: str) -> list[str]:
    """Remove `name` from the DNS of the networks its definition names (live and persistent);
    returns the networks it was removed from. A network gone meanwhile has nothing to do."""
    nets = {s.get("network") for s in parse_xml(xml).findall("devices/interface/source")
            if s.get("network")}
    if not nets or not hasattr(conn, "list_networks"):
        return []
    done = []
    for rec in conn.list_networks():
        if rec.name not in nets:
            continue
        for doc, live in ((rec.xml, False), (rec.live_xml, True)):
            gone = [h for h in dns_hosts(parse_xml(doc)) if name in h[1]] if doc else []
            if gone:
                conn.update_network_dns(rec.name, [], gone, live=live, config=not live)
                done.append(rec.name)
    return sorted(set(done))


def destroy_target(conn: Any, t: Target, *, force_foreign: bool,
                   delete_rootfs: bool) -> None:
    """Remove one target, recording the result on it; errors are recorded, not raised."""
    if not t.exists:
        t.result = t.result or "absent"
        return
    if t.foreign and not force_foreign:
        t.result = f"refused: {t.foreign}; --force-foreign removes it anyway"
        return
    try:
        if t.network:
            conn.remove_network(t.name)
            t.result = "removed"
            return
        if conn.get(t.name).active:
            conn.destroy(t.name)
        conn.undefine(t.name)
        t.result = "removed"
        forget_names(conn, t.name, t.xml)
        if delete_rootfs or t.owns_tree:
            if is_local_uri(t.uri):
                gone = delete_files(t.name, t.xml)
            else:  # never this machine's paths: a tree in a guest is deleted there
                from virtmix.nesting.ops import delete_remote_files

                gone = delete_remote_files(t.uri, t.name, t.xml)
            if gone:
                t.result += ", deleted " + ", ".join(gone)
    except VirtmixError as exc:
        t.result = f"failed: {exc.message}"
    except OSError as exc:
        t.result = f"failed: {exc}"
