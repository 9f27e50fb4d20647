"""Stop and undefine what virtmix made: an inventory's domains and networks, or named domains.

A domain without virtmix's metadata (or belonging to another site) is never touched unless
the caller forces it. Root filesystems and disk images are deleted only when asked, and
only those virtmix itself created under its storage directory.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from virtmix.backend.protocol import Backend
from virtmix.backend.records import DomainRecord, is_active_state
from virtmix.converge.observe import dns_hosts, parse_xml
from virtmix.domain import disk, filesystem
from virtmix.errors import NotFoundError, VirtmixError
from virtmix.inventory.site import Site
from virtmix.util import layout
from virtmix.util.identity import owns_network
from virtmix.util.uris import is_local

GUEST_FILES = ("root.qcow2", "serial.log", "vmlinuz", "initrd.img", "seed.iso", "host_key",
               "host_key.pub")


class Outcome(Enum):
    """What destroy did with a target; `Target.result` words it for the admin."""

    PENDING = "pending"
    REMOVED = "removed"
    ABSENT = "absent"
    REFUSED = "refused"  # not virtmix's (or another site's): only --force-foreign removes it
    FAILED = "failed"


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
    outcome: Outcome = Outcome.PENDING
    detail: str = ""         # why it failed or was refused, or what was deleted with it
    how: str = ""            # how a running domain went: shut down, forced off after Ns
    kept: list[str] = field(default_factory=list)  # files of it destroy left, and why

    @property
    def result(self) -> str:
        """What happened, for the admin: removed[, deleted ...][ (how)] | absent |
        refused: ... | failed: ..."""
        if self.outcome is Outcome.REMOVED:
            return ("removed" + (f", deleted {self.detail}" if self.detail else "")
                    + (f" ({self.how})" if self.how else ""))
        if self.outcome in (Outcome.REFUSED, Outcome.FAILED):
            return f"{self.outcome.value}: {self.detail}"
        return str(self.outcome.value)

    def fail(self, why: str) -> None:
        self.outcome, self.detail = Outcome.FAILED, why


def _owner_problem(metadata: dict[str, str] | None, site: str | None) -> str:
    if metadata is None:
        return "no virtmix metadata (not defined by virtmix)"
    if site is not None and metadata.get("site") != site:
        if metadata.get("site") is None and metadata.get("created-by"):
            return f"made by `virtmix {metadata['created-by']}`, not by this inventory"
        return f"belongs to virtmix site {metadata.get('site')!r}"
    return ""


def domain_target(conn: Backend, name: str, address: str, site: str | None) -> Target:
    try:
        rec = conn.get(name)
    except NotFoundError:
        return Target(name, address, conn.uri, exists=False)
    return record_target(rec, address, site, conn.uri)


def record_target(rec: DomainRecord, address: str, site: str | None, uri: str) -> Target:
    """The target of a domain already read on the connection to uri (found by name, or in
    a listing)."""
    return Target(rec.name, address, uri, active=rec.active, xml=rec.xml,
                  foreign=_owner_problem(rec.metadata, site),
                  owns_tree=(rec.metadata or {}).get("created-by") == "create")


def site_targets(site: Site, conns: dict[str, Backend], networks: dict[str, str],
                 failures: dict[str, str] | None = None) -> list[Target]:
    """Every entry of the site (nested containers first, then hosts', guests), then networks.

    failures: URI -> why it could not be opened or read (its entries are failed targets)."""
    failures = dict(failures or {})
    out: list[Target] = []
    order = sorted(site.entries, key=lambda e: (0 if e.parent else 1 if e.kind == "container"
                                                 else 2))
    # One listing per connection (Backend.find_domains), not a lookup per entry: the
    # connections are read at once, each its own daemon.
    names: dict[str, list[str]] = {}
    for e in order:
        if e.uri in conns:
            names.setdefault(e.uri, []).append(e.name)
    found: dict[str, dict[str, DomainRecord]] = {}

    def read(uri: str) -> None:
        try:
            found[uri] = conns[uri].find_domains(names[uri])
        except VirtmixError as exc:
            failures[uri] = exc.message

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        list(pool.map(read, names))
    for e in order:
        if e.uri not in found:
            target = Target(e.name, e.address, e.uri, exists=False)
            target.fail(failures.get(e.uri, f"no connection to {e.uri}"))
            out.append(target)
        elif e.name in found[e.uri]:
            out.append(record_target(found[e.uri][e.name], e.address, site.name, e.uri))
        else:
            out.append(Target(e.name, e.address, e.uri, exists=False))
    for name, uri in networks.items():
        conn = conns.get(uri)
        target = Target(name, name, uri, network=True, exists=False)
        if conn is not None:
            for rec in conn.list_networks():
                if rec.name == name:
                    target.exists, target.active = True, rec.active
                    if not owns_network(rec.uuid, site.name, site.networks[name].host, name):
                        target.foreign = (f"its UUID is not site {site.name!r}'s (not defined "
                                          "by virtmix for this site)")
        out.append(target)
    return out


def _rootfs_dirs(xml: str) -> list[Path]:
    """Directories virtmix created for a domain: its built tree's or its guest files' dir."""
    root = parse_xml(xml)
    out = []
    rootfs = filesystem.root_tree(root)
    if rootfs is not None:
        tree = Path(rootfs)
        if tree.name == "rootfs" and tree.parent.parent.name == "containers":
            out.append(tree.parent)
    for d in disk.read(root):
        path = Path(d.path or "")
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
            pub = d / "host_key.pub"
            if pub.is_file():  # a cloud image's host key, made and pinned by virtmix
                from virtmix.images.keys import unpin_key
                from virtmix.rootfs import Storage

                unpin_key(Storage(d.parent.parent), pub.read_text())
            for f in d.iterdir():
                if f.name in GUEST_FILES or f.name.startswith("disk"):
                    f.unlink()
            (d / layout.GUEST_FILES_MARKER).unlink()
            with contextlib.suppress(OSError):
                d.rmdir()
            removed.append(str(d))
        # else: a directory virtmix did not make (an admin's own */guests/NAME/disk*): kept
    return removed


def forget_names(conn: Backend, name: str, xml: str) -> list[str]:
    """Remove `name` from the DNS of the networks its definition names (live and persistent);
    returns the networks it was removed from. A network gone meanwhile has nothing to do."""
    if not xml:
        return []
    nets = {s.get("network") for s in parse_xml(xml).findall("devices/interface/source")
            if s.get("network")}
    if not nets:
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


def _init_is_systemd(conn: Backend, name: str) -> bool | None:
    """Is a local container's init systemd? None: unknown (a remote daemon, unreadable)."""
    if conn.driver != "lxc":
        return True  # libvirt's test driver: no processes to look at
    if not is_local(conn.uri):
        return None
    import os

    from virtmix.hosts.local import init_pid

    try:
        return "systemd" in os.readlink(f"/proc/{init_pid(name, conn.domain_pid(name))}/exe")
    except (OSError, VirtmixError):
        return None


def stop_cleanly(conn: Backend, name: str, *, container: bool, timeout: float) -> str:
    """Ask a running domain to shut down, wait up to timeout, then force it off.

    Guests get ACPI (libvirt's shutdown); containers whose init is systemd get libvirt's
    shutdown, others SIGPWR (busybox init halts on it, SIGTERM makes it reboot), and one
    whose init cannot be seen (behind an ssh URI) both.
    Returns "shut down" or "forced off after Ns"."""
    import time

    from virtmix.errors import StateError

    systemd = _init_is_systemd(conn, name) if container else True
    try:
        if systemd is False:
            conn.send_signal(name, "SIGPWR")
        else:
            conn.shutdown(name)
    except StateError:
        pass
    except VirtmixError:
        timeout = 0  # it cannot be asked (no ACPI, gone): force it
    if systemd is None:
        # Unknown init: libvirt's shutdown only writes to /dev/initctl, which busybox's init
        # and most non-systemd inits never read (nothing else is sent), so it would wait the
        # whole timeout. SIGPWR halts those; systemd merely starts sigpwr.target (none
        # ships), so sending both is safe for either.
        with contextlib.suppress(VirtmixError):
            conn.send_signal(name, "SIGPWR")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not conn.get(name).active:
                return "shut down"
        except NotFoundError:
            return "shut down"
        time.sleep(0.2)
    try:
        if conn.get(name).active:
            conn.destroy(name)
    except NotFoundError:
        return "shut down"
    return f"forced off after {timeout:g}s"


def _snapshot_roots(xml: str) -> list[str]:
    """The storage dirs a container's snapshots may be in (snapshots/ops.storage_for): the
    one its built tree lives in, its site's storage_dir, the default storage."""
    from virtmix.rootfs import Storage
    from virtmix.rootfs.snapshot_dirs import built_storage
    from virtmix.util.identity import VIRTMIX_NS

    root = parse_xml(xml)
    roots = []
    tree = filesystem.root_tree(root)
    if tree and (built := built_storage(tree)):
        roots.append(built)
    entry = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    inv = entry.get("inventory") if entry is not None else None
    if inv and (found := _inventory_storage(inv)):
        roots.append(found)
    roots.append(str(Storage().root))
    return list(dict.fromkeys(roots))


@functools.lru_cache(maxsize=64)
def _inventory_storage(inventory: str) -> str | None:
    """The storage_dir of the inventory a domain's metadata names (read once per destroy
    of a site's thousand containers, not once each); None if it cannot be read."""
    from virtmix.inventory.load import load_site

    try:
        return str(load_site(Path(inventory)).inventory.settings.storage_dir)
    except (VirtmixError, OSError):
        return None


def delete_snapshots(name: str, xml: str, uri: str) -> list[str]:
    """Delete a removed container's snapshots (those recording its UUID), here or on its
    host over ssh, as lxc-destroy -s and Incus do; what went, for destroy to say."""
    from virtmix.rootfs import snapshot_dirs

    root = parse_xml(xml)
    if root.get("type") != "lxc":
        return []  # a guest's snapshots are in its qcow2 files (and libvirt's metadata)
    uuid = root.findtext("uuid") or ""
    gone = []
    if is_local(uri):
        for st in _snapshot_roots(xml):
            names = snapshot_dirs.delete_owned(st, name, uuid)
            if names:
                gone.append(f"{len(names)} snapshot(s) ({', '.join(names)}) in "
                            f"{snapshot_dirs.snapshots_parent(st, name)}")
        return gone
    from virtmix.util.uris import is_ssh_uri

    if not is_ssh_uri(uri):
        return []
    from virtmix.hosts.ssh import run_remote

    for st in _snapshot_roots(xml):
        names = run_remote(uri, snapshot_dirs.delete_owned_sh(st, name, uuid)).split()
        if names:
            gone.append(f"{len(names)} snapshot(s) ({', '.join(names)}) in "
                        f"{snapshot_dirs.snapshots_parent(st, name)} on {uri}")
    return gone


def kept_snapshots(name: str, xml: str, uri: str) -> list[str]:
    """The snapshots of a removed container left on this machine, for destroy to say."""
    from virtmix.rootfs import snapshot_dirs

    root = parse_xml(xml)
    if not is_local(uri) or root.get("type") != "lxc":
        return []
    kept = []
    for st in _snapshot_roots(xml):
        found = [p for p in snapshot_dirs.owned(st, name, root.findtext("uuid") or "")
                 if not p.name.startswith(".")]
        if found:
            kept.append(f"{snapshot_dirs.snapshots_parent(st, name)} ({len(found)} "
                        "snapshot(s) of it, kept; delete the directory when done)")
    return kept


def kept_files(name: str, xml: str, uri: str) -> list[str]:
    """What of a removed domain is still on disk (its dirs virtmix made, and given
    files), each with what it is, for destroy to say."""
    kept: list[str] = []
    if not xml:
        return kept
    if is_local(uri):
        for d in _rootfs_dirs(xml):
            if d.name == name and d.exists():
                what = "its built tree" if d.parent.name == "containers" else "its disks/files"
                kept.append(f"{d} ({what}; --delete-rootfs deletes it, the next apply "
                            "checks it before reusing it)")
    root = parse_xml(xml) if xml else None
    if root is not None:
        for fs in root.findall("devices/filesystem/source"):
            tree = Path(fs.get("dir", ""))
            if tree.name != "rootfs" or tree.parent.parent.name != "containers":
                if str(tree) and is_local(uri) and tree.exists():
                    kept.append(f"{tree} (a tree you gave: never deleted)")
    return kept


def destroy_target(conn: Backend, t: Target, *, force_foreign: bool,
                   delete_rootfs: bool, force: bool = True, timeout: float = 30.0,
                   keep_disks: bool = False, keep_snapshots: bool = False) -> None:
    """Remove one target, recording the result on it; errors are recorded, not raised.

    A container's snapshots go with its tree (lxc-destroy -s, Incus: an instance's
    snapshots are deleted with it), unless keep_snapshots."""
    if not t.exists:
        if t.outcome is Outcome.PENDING:
            t.outcome = Outcome.ABSENT
        return
    if t.foreign and not force_foreign:
        t.outcome = Outcome.REFUSED
        t.detail = f"{t.foreign}; --force-foreign removes it anyway"
        return
    try:
        if t.network:
            conn.remove_network(t.name)
            t.outcome = Outcome.REMOVED
            return
        how = ""
        # Its state only (2 round trips), not its record again: the definition was read
        # when the target was found.
        if is_active_state(conn.state(t.name)):
            if force:
                conn.destroy(t.name)
                how = "forced off"
            else:
                container = parse_xml(t.xml).get("type") == "lxc" if t.xml else False
                how = stop_cleanly(conn, t.name, container=container, timeout=timeout)
        conn.undefine(t.name)
        t.outcome = Outcome.REMOVED
        t.how = how
        forget_names(conn, t.name, t.xml)
        guest = bool(t.xml) and parse_xml(t.xml).get("type") != "lxc"
        nested = not is_local(t.uri)
        # By default a guest's disks and files apply made, and a nested container's pushed
        # tree, go with it (docs/apply.md "What destroy removes and keeps"); a host
        # container's built tree only with --delete-rootfs (or when `create` made it).
        everything = delete_rootfs or t.owns_tree
        if everything or (not keep_disks and (guest or nested)):
            if not nested:
                gone = delete_files(t.name, t.xml)
            else:  # never this machine's paths: a tree in a guest is deleted there
                from virtmix.nesting.ops import delete_remote_files

                gone = delete_remote_files(t.uri, t.name, t.xml)
            if not keep_snapshots and t.xml and (everything or gone):
                # with the tree: not when a given tree was kept (no --delete-rootfs)
                gone += delete_snapshots(t.name, t.xml, t.uri)
            t.detail = ", ".join(gone)
        t.kept = kept_files(t.name, t.xml, t.uri)
        if t.xml:
            t.kept += kept_snapshots(t.name, t.xml, t.uri)
    except VirtmixError as exc:
        t.fail(exc.message)
    except OSError as exc:
        t.fail(str(exc))
