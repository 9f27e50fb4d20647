"""Site-wide checks on a loaded inventory: conflicts that are errors (one MAC or address
twice on a network, a DHCP range that is empty or outside its network) and settings that
are legal but dangerous, which validate and plan print as warnings (SECURITY.md).

Pure: reads the Site, no I/O (validate may run on a machine that is not the host).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from virtmix.inventory import uris
from virtmix.inventory.addresses import dhcp_range
from virtmix.inventory.model import Container, Guest, RootfsPath
from virtmix.inventory.site import Entry, Site, is_privileged
from virtmix.inventory.strings import is_system_dir
from virtmix.util.layout import container_tree

# Below these, a read-write mount gives the container the host's configuration, devices,
# kernel knobs or boot files.
_SENSITIVE_PREFIXES = ("/etc/", "/proc/", "/sys/", "/dev/", "/boot/", "/root/", "/usr/",
                       "/var/lib/libvirt/", "/run/")


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p and p != ".")


def conflicts(site: Site) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(message, key path) for each site-wide conflict."""
    yield from _network_conflicts(site)
    yield from _dhcp_ranges(site)


def _segment(e: Entry, iface) -> tuple[str, str]:
    """Which layer-2 segment an interface is on: a network or bridge of one host (nested
    containers: of their guest's own libvirt)."""
    where = e.parent or e.host
    return (where, iface.network) if iface.network else (where, f"bridge {iface.bridge}")


def _network_conflicts(site: Site) -> Iterator[tuple[str, tuple[Any, ...]]]:
    macs: dict[tuple[str, str, str], str] = {}
    addrs: dict[tuple[str, str, str], str] = {}
    for e in site.entries:
        for i, iface in enumerate(e.spec.interfaces):
            seg = _segment(e, iface)
            kp = (*e.keypath.split("."), "interfaces", i)
            shown = iface.network or iface.bridge
            if iface.mac:
                key = (*seg, iface.mac.lower())
                other = macs.setdefault(key, e.keypath)
                if other != e.keypath:
                    yield (f"MAC {iface.mac} is used twice on {shown!r} (also by {other})",
                           (*kp, "mac"))
            if iface.ipv4 is not None and not _is_host_address(iface.ipv4):
                yield (f"{iface.ipv4} is not a host address (it is its network's own or "
                       "broadcast address)", (*kp, "ipv4"))
            if iface.ipv4 is not None:
                key = (*seg, str(iface.ipv4.ip))
                other = addrs.setdefault(key, e.keypath)
                if other != e.keypath:
                    yield (f"address {iface.ipv4.ip} is used twice on {shown!r} (also by "
                           f"{other})", (*kp, "ipv4"))
                net = site.networks.get(iface.network or "") if not e.parent else None
                if net is not None and net.ipv4 is not None and net.ipv4.ip == iface.ipv4.ip:
                    yield (f"address {iface.ipv4.ip} is network {iface.network!r}'s own "
                           "(the host's side)", (*kp, "ipv4"))


def _is_host_address(iface) -> bool:
    """Not the subnet's network or broadcast address (a /31 or /32 has only hosts)."""
    subnet = iface.network
    return subnet.prefixlen >= 31 or iface.ip not in (subnet.network_address,
                                                      subnet.broadcast_address)


def _dhcp_ranges(site: Site) -> Iterator[tuple[str, tuple[Any, ...]]]:
    for name, net in site.networks.items():
        if net.ipv4 is not None and not _is_host_address(net.ipv4):
            yield (f"{net.ipv4} is not a host address of its network (it is the network's "
                   "own or broadcast address)", ("networks", name, "ipv4"))
            continue
        rng = net.dhcp
        if rng is True and net.ipv4 is not None and net.mode != "bridge":
            start, end = dhcp_range(net)
            if start > end:
                yield (f"network {name!r} ({net.ipv4.network}) is too small for a DHCP range; "
                       "use a larger network or dhcp: {start, end}", ("networks", name, "dhcp"))
        if isinstance(rng, bool) or net.ipv4 is None:
            continue
        subnet = net.ipv4.network
        kp = ("networks", name, "dhcp")
        if rng.start > rng.end:
            yield f"DHCP range {rng.start}-{rng.end} is empty (start after end)", kp
        for bound in (rng.start, rng.end):
            if bound not in subnet or bound in (subnet.network_address,
                                                subnet.broadcast_address):
                yield (f"DHCP range {rng.start}-{rng.end}: {bound} is not a host address "
                       f"of network {name!r} ({subnet})"), kp
                break


def warnings(site: Site) -> list[str]:
    """Legal but dangerous settings, each with its key path."""

    out: list[str] = []
    storage = _norm(site.inventory.settings.storage_dir)
    built: dict[tuple[str, str], str] = {}
    given: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in site.entries:
        spec = e.spec
        if isinstance(spec, Container):
            place = e.parent or e.host
            if isinstance(spec.rootfs, RootfsPath):
                tree = _norm(spec.rootfs.path)
                privileged = is_privileged(e)
                if privileged:
                    given[(place, tree)].append(e)
                if privileged and is_system_dir(tree):
                    out.append(f"{e.keypath}.rootfs.path: privileged container {e.address} "
                               f"runs on {tree}, a system directory of the host: root in it "
                               "is root on the host, and its files are the host's")
            elif not e.parent:
                built[(place, container_tree(storage, e.name))] = e.address
            out += _mount_warnings(e, spec)
        else:
            assert isinstance(spec, Guest)
            out += _disk_warnings(e, spec, storage)
    for (_place, tree), entries in given.items():
        if len(entries) > 1:
            names = ", ".join(x.address for x in entries)
            out.append(f"{entries[0].keypath}.rootfs.path: privileged containers {names} "
                       f"share one tree ({tree}): each one's root can change what the others "
                       "run")
    for e in site.entries:  # a given tree that virtmix also builds (and rebuilds) for another
        if isinstance(e.spec, Container) and isinstance(e.spec.rootfs, RootfsPath):
            owner = built.get((e.parent or e.host, _norm(e.spec.rootfs.path)))
            if owner is not None:
                out.append(f"{e.keypath}.rootfs.path: {_norm(e.spec.rootfs.path)} is the tree "
                           f"virtmix builds for container {owner}: two containers would "
                           "share it, and apply may rebuild or delete it")
    out += _uri_warnings(site)
    return out


def _mount_warnings(e: Entry, spec: Container) -> list[str]:
    out = []
    for i, m in enumerate(spec.mounts):
        source = _norm(m.source)
        if m.readonly:
            continue
        if is_system_dir(source) or (source + "/").startswith(_SENSITIVE_PREFIXES):
            out.append(f"{e.keypath}.mounts[{i}].source: {source} is mounted read-write into "
                       f"container {e.address}: the container can change the host's "
                       "files there (add readonly: true)")
    return out


def _disk_warnings(e: Entry, spec: Guest, storage: str) -> list[str]:
    out = []
    # Not image.path: a given base image is only the backing file of the guest's own
    # overlay (STORAGE/guests/NAME/root.qcow2), which the guest cannot write through.
    paths = [(f"disks[{i}].path", d.path) for i, d in enumerate(spec.disks) if d.path]
    for key, path in paths:
        path = _norm(path)
        if path.startswith("/dev/"):
            out.append(f"{e.keypath}.{key}: guest {e.address} gets the host's block device "
                       f"{path}: the guest can read and write all of it")
        elif not path.startswith(storage + "/"):
            out.append(f"{e.keypath}.{key}: guest {e.address} gets {path}, a host file "
                       f"outside virtmix's storage ({storage}): the guest can write it")
    return out


def _uri_warnings(site: Site) -> list[str]:
    out = []
    for hname, host in site.inventory.hosts.items():
        spots = [("uri", host.uri), ("lxc_uri", host.lxc_uri)]
        spots += [(f"guests.{g}.lxc_uri", guest.lxc_uri) for g, guest in host.guests.items()
                  if guest.lxc_uri]
        for key, uri in spots:
            if uris.transport(uri) == "ext":
                out.append(f"hosts.{hname}.{key}: {uri} uses libvirt's 'ext' transport, "
                           "which runs the command the URI names when virtmix connects "
                           "(plan and apply refuse it without --allow-uri-commands)")
    return out
