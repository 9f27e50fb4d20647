"""`ls` rows and `info` details for any domain, virtmix-defined (managed) or not (foreign)."""

from __future__ import annotations

from typing import Any

from virtmix.admin.targets import Place, Session, Target
from virtmix.admin.trees import tree_info
from virtmix.domain.settings import parse_domain
from virtmix.domain.tunables import UNLIMITED_KIB, from_libvirt
from virtmix.errors import StateError
from virtmix.hosts import host_for, is_local, shares_are_weights
from virtmix.hosts.local import init_pid
from virtmix.hosts.netns import netns_ipv4
from virtmix.util.units import format_kib

LS_COLUMNS = ("name", "kind", "state", "host", "parent", "ipv4", "cpuset", "shares",
              "memory", "site", "managed")


def shown_cputune(place: Place, cputune: dict[str, int]) -> dict[str, int]:
    """<cputune> as the inventory and `cgroup` say it: where libvirt's <shares> is a cgroup
    v2 weight (nested in a guest, v2 hosts), shares in v1 units beside the weight itself."""
    if "shares" not in cputune or not shares_are_weights(place.uri, place.parent):
        return cputune
    weight = cputune["shares"]
    return {**cputune, "shares": from_libvirt("cputune.shares", weight, True),
            "cpu_weight": weight}


def effective_memory_kib(s) -> int | None:
    """The memory limit a domain runs with: the hard limit when one is set (for a
    container it is the cgroup limit), else <memory>."""
    return s.memtune.get("hard_limit") or s.memory_kib


def site_of(meta: dict[str, str]) -> str | None:
    """Who manages a domain: its site, `create` for `virtmix create`'s, None if foreign."""
    if meta.get("site"):
        return meta["site"]
    return f"({meta['created-by']})" if meta.get("created-by") else None


def domain_ipv4(place: Place, conn, record, s) -> list[str]:
    """A running domain's IPv4 addresses, from where they are real: libvirt's
    interfaceAddresses (leases, ARP, guest agent) where the driver has it; else, for a
    container on this host, its network namespace; else its static addresses (libvirt
    configures them in the container); else the DHCP leases of its networks."""
    if not record.active:
        return []
    found = conn.interface_ipv4(record.name)
    if not found and record.kind == "lxc" and is_local(place.uri) and record.id:
        try:
            pid = init_pid(record.name, record.id)
        except StateError:
            pid = 0
        if pid > 0:
            found = netns_ipv4(pid)
    if not found:
        found = [i.ipv4.split("/")[0] for i in s.interfaces if i.ipv4]
    if not found:
        for iface in s.interfaces:
            if iface.kind == "network" and iface.source and iface.mac:
                found += conn.network_leases(iface.source).get(iface.mac.lower(), [])
    return list(dict.fromkeys(found))


def ls_row(place: Place, record, conn=None) -> dict[str, Any]:
    s = parse_domain(record.tree)
    meta = record.metadata or {}
    shares = shown_cputune(place, s.cputune).get("shares")
    memory = effective_memory_kib(s)
    return {
        "name": record.name,
        "kind": record.kind,
        "state": record.state,
        "host": place.host,
        "parent": place.parent or meta.get("parent"),
        "ipv4": domain_ipv4(place, conn, record, s) if conn is not None else [],
        "cpuset": s.vcpu_cpuset,
        "shares": shares,
        "memory": format_kib(memory) if memory else None,  # as the table shows
        "memory_kib": memory,
        "site": site_of(meta),
        "managed": "managed" if record.managed else "foreign",
        "uri": place.uri,
    }


def ls_rows(session: Session) -> list[dict[str, Any]]:
    records = session.records()
    rows = [ls_row(place, rec, conn) for place, conn, rec in records]
    _mark_nested_frozen(rows, records)
    rows += unknown_rows(session)
    return sorted(rows, key=lambda r: (r["host"], r["parent"] or "", r["name"], r["uri"]))


def unknown_rows(session: Session) -> list[dict[str, Any]]:
    """Nested containers whose guest's libvirt did not answer: listed from the inventory
    with state `unknown` and the reason, never with a state seen earlier."""
    sites = [session.site] if session.site is not None else session.found_sites()
    rows = []
    for site in sites:
        for e in site.entries:
            why = session.unreachable.get(e.uri)
            if not e.parent or why is None:
                continue
            rows.append({"name": e.name, "kind": "lxc", "state": "unknown", "host": e.host,
                         "parent": e.parent, "cpuset": None, "shares": None,
                         "memory": None, "memory_kib": None, "managed": "managed",
                         "uri": e.uri, "reason": f"guest {e.parent} does not answer: {why}"})
    return rows


def unknown_info(session: Session, address: str, why: str) -> dict[str, Any]:
    """`info GUEST/NAME` when the guest does not answer: what the inventory says, state
    unknown and why."""
    guest, _, name = address.partition("/")
    return {"name": address, "kind": "lxc", "state": "unknown", "parent": guest,
            "reason": f"guest {guest} does not answer: {why}"}


def _mark_nested_frozen(rows: list[dict[str, Any]], records) -> None:
    """Containers in guests are frozen through cgroup.freeze (libvirt 9.0 has no v2
    freezer) and libvirt calls them running: ask each guest once (virtmix.nesting.ops)."""
    from virtmix.errors import VirtmixError
    from virtmix.hosts import is_ssh_uri
    from virtmix.nesting.ops import frozen_ids

    by_uri: dict[str, dict[int, dict[str, Any]]] = {}
    for row, (place, _conn, rec) in zip(rows, records, strict=True):
        if place.parent and is_ssh_uri(place.uri) and rec.kind == "lxc" and \
                rec.state == "running" and rec.id:
            by_uri.setdefault(place.uri, {})[rec.id] = row
    for uri, by_id in by_uri.items():
        try:
            for dom_id in frozen_ids(uri, list(by_id)):
                by_id[dom_id]["state"] = "frozen"
        except VirtmixError:
            continue  # the listing stands; only the frozen mark is missing


def ls_cells(row: dict[str, Any]) -> list[str]:
    """A row as the table prints it ('-' for settings the definition leaves unset)."""
    return ["-" if row[c] in (None, []) else ",".join(row[c]) if isinstance(row[c], list)
            else str(row[c]) for c in LS_COLUMNS]


def _live(target: Target) -> dict[str, Any]:
    rec = target.record
    info = target.conn.runtime_info(rec.name)
    out: dict[str, Any] = {"id": rec.id, "cpu_time_s": round(info.cpu_time_ns / 1e9, 2),
                           "memory_used_kib": info.memory_kib}
    if rec.kind == "lxc":
        # The kernel's memory limit as libvirt reads it back (memory.limit_in_bytes or
        # memory.max): what `memory:` and memtune.hard_limit together mean for a container.
        hard = target.conn.memory_parameters(rec.name, live=True).get("hard_limit")
        if hard:
            out["mem_limit_kib"] = hard if hard < UNLIMITED_KIB else "unlimited"
    if rec.kind == "lxc" and is_local(target.place.uri):
        try:
            out["init_pid"] = init_pid(rec.name, rec.id)
            out["cpuset_live"] = host_for(target.place.uri).read_cpuset(rec.id) or ""
        except (StateError, OSError):
            pass
    return out


def info(target: Target) -> dict[str, Any]:
    rec = target.record
    s = parse_domain(rec.tree)
    out: dict[str, Any] = {
        "name": target.address, "kind": rec.kind, "state": rec.state, "uri": target.place.uri,
        "host": target.place.host, "parent": target.place.parent, "uuid": rec.uuid,
        "managed": rec.managed, "metadata": rec.metadata, "persistent": rec.persistent,
        "autostart": target.conn.autostart(rec.name) if rec.persistent else False,
        "vcpus": s.vcpus, "cpuset": s.vcpu_cpuset,
        "cputune": shown_cputune(target.place, s.cputune),
        "memory_kib": s.memory_kib, "memtune_kib": s.memtune, "blkio_weight": s.blkio_weight,
        "interfaces": [{"type": i.kind, "source": i.source, "mac": i.mac, "ipv4": i.ipv4}
                       for i in s.interfaces],
    }
    if target.place.parent and rec.kind == "lxc" and rec.state == "running" and rec.id:
        row = {"state": rec.state}
        _mark_nested_frozen([row], [(target.place, target.conn, rec)])
        out["state"] = row["state"]
    if rec.kind == "lxc":
        out.update(rootfs=s.rootfs, init=s.init, idmap=s.idmap,
                   privileged=s.idmap is None)
        if is_local(target.place.uri):  # a tree virtmix built: clone method, base (issue 5)
            out.update(tree_info(s.rootfs))
    else:
        out.update(virt_type=s.type, disks=[d.path for d in s.disks], kernel=s.kernel)
    if rec.active:
        out.update(_live(target))
    return out


def info_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the text form of `info`, lxc-info style."""
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        if value in (None, {}, []) or key == "metadata":
            continue
        if key.endswith("_kib") and isinstance(value, int):
            value = format_kib(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={format_kib(v) if key.endswith('_kib') else v}"
                              for k, v in value.items())
        elif isinstance(value, list):
            value = " ".join(
                str(v) if not isinstance(v, dict)
                else ",".join(f"{k}={x}" for k, x in v.items() if x) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        pairs.append((key.replace("_kib", "").replace("_", " "), str(value)))
    meta = data.get("metadata")
    if meta and meta.get("created-by"):
        pairs.append(("created by", f"virtmix {meta['created-by']} (template "
                      f"{meta.get('template', '?')}); destroy also deletes its tree"))
    elif meta:
        pairs.append(("inventory", f"{meta.get('inventory', '?')} (site {meta.get('site')})"))
    return pairs
