"""Containers inside guests: reaching a guest's libvirt, waiting for it, and the site tree.

A guest entry with `containers:` is an LXC host. Its containers live on the guest's own
libvirt, reached through libvirt's ssh transport with virtmix's ssh setup
(virtmix.images.keys). apply brings the guest up first, waits here for its libvirt to
answer, then applies the containers; destroy takes them down before the guest.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtmix.backend.protocol import Backend
from virtmix.errors import BackendError
from virtmix.inventory.site import Entry, Site
from virtmix.util import layout
from virtmix.util.polling import poll

DEFAULT_WAIT = 300.0  # seconds; a TCG guest answers in ~35 s here, a KVM one in a few


def guest_wait_seconds(default: float = DEFAULT_WAIT) -> float:
    """How long apply waits for a guest's libvirt (env VIRTMIX_GUEST_WAIT overrides)."""
    value = os.environ.get("VIRTMIX_GUEST_WAIT")
    try:
        return float(value) if value else default
    except ValueError:
        raise BackendError(f"VIRTMIX_GUEST_WAIT={value!r}: expected a number of seconds"
                           ) from None


def lxc_hosts(site: Site) -> list[Entry]:
    """Guests that host containers."""
    return [e for e in site.entries if e.kind == "guest" and e.spec.containers]


def register_transports(site: Site) -> None:
    """Make every guest's container URI open through virtmix's ssh setup (lazy: nothing is
    written until a connection is really opened)."""
    nested = {e.uri: e.parent for e in site.entries if e.parent}
    if not nested:
        return
    from virtmix.backend import register_transport

    storage_dir = site.inventory.settings.storage_dir
    guests = {e.name: e for e in lxc_hosts(site)}

    for uri, guest in nested.items():
        def resolve(uri: str = uri, guest: str = guest) -> str:
            from virtmix.images.guest import ensure_pinned
            from virtmix.images.keys import transport_uri
            from virtmix.rootfs.storage import Storage

            storage = Storage(storage_dir)
            if guest in guests:  # its address may have changed since its key was pinned
                ensure_pinned(storage, guests[guest])
            return transport_uri(storage, uri)

        register_transport(uri, resolve)


def open_site(path: str | Path) -> Site:
    """Load an inventory to act on it: load_site, then register_transports so that the
    libvirt inside its guests is reached through virtmix's ssh setup."""
    from virtmix.inventory.load import load_site

    site = load_site(path)
    register_transports(site)
    return site


def _guest_entry(site: Site, guest: str) -> Entry | None:
    return next((e for e in site.entries if e.kind == "guest" and e.name == guest), None)


def _essence(message: str) -> str:
    """The useful part of a failed open: ssh's own words, without the transport URI."""
    message = re.sub(r"^cannot connect to libvirt at \S+: ", "", message)
    message = re.sub(r" \(check ssh access to that host.*\)$", "", message)
    message = re.sub(r"^(Cannot recv data|End of file while reading data): ", "", message)
    return re.sub(r": (Connection reset by peer|Input/output error)$", "", message)


def wait_for_guest_libvirt(site: Site, guest: str, uri: str, *, timeout: float | None = None,
                           stop: threading.Event | None = None, interval: float = 2.0) -> Backend:
    """Open `uri` (the guest's libvirt) as soon as it answers; BackendError after timeout,
    naming the guest, what it tried and the containers that could not be applied."""
    from virtmix.backend import open_connection

    timeout = guest_wait_seconds() if timeout is None else timeout
    last = "no attempt"

    def attempt() -> Backend | None:
        nonlocal last
        try:
            return open_connection(uri)
        except BackendError as exc:
            last = _essence(exc.message)
            return None

    conn = poll(attempt, timeout=timeout, interval=interval, stop=stop)
    if conn is not None:
        return conn
    waiting = [e.address for e in site.children(guest)]
    entry = _guest_entry(site, guest)
    hint = None
    if entry is not None:
        log = layout.guest_path(site.inventory.settings.storage_dir, guest, "serial.log")
        hint = f"is guest {guest} up and its network reachable? its console log: {log}"
    raise BackendError(
        f"guest {guest}: its libvirt did not answer within {timeout:g}s at {uri} "
        f"(last error: {last}); not applied: {', '.join(waiting) or 'nothing'}", hint=hint)


# -- the site as a tree: host -> guests -> containers -------------------------------------
@dataclass
class Node:
    """One node of `ls --tree` / plan's tree."""

    name: str
    kind: str  # host | guest | container
    state: str = ""
    cpuset: str | None = None
    shares: int | None = None
    note: str = ""
    children: list[Node] = field(default_factory=list)

    def label(self) -> str:
        bits = [self.name, f"[{self.kind}]"]
        if self.state:
            bits.append(self.state)
        if self.cpuset is not None:
            bits.append(f"cpuset={self.cpuset}")
        if self.shares is not None:
            bits.append(f"shares={self.shares}")
        if self.note:
            bits.append(f"({self.note})")
        return " ".join(bits)


def tree_from_rows(rows: list[dict[str, Any]]) -> list[Node]:
    """`ls` rows (name, kind, state, host, parent, cpuset, shares) as host -> guests ->
    containers. Nested containers whose guest is not listed hang under a placeholder."""
    def node(r: dict[str, Any], kind: str) -> Node:
        return Node(r["name"], kind, r.get("state") or "", r.get("cpuset"), r.get("shares"))

    hosts: dict[str, Node] = {}
    guests: dict[tuple[str, str], Node] = {}
    for r in rows:
        host = hosts.setdefault(r["host"], Node(r["host"], "host"))
        if r["kind"] == "kvm" and not r.get("parent"):
            guests[(r["host"], r["name"])] = g = node(r, "guest")
            host.children.append(g)
    for r in rows:
        if r["kind"] != "lxc":
            continue
        host = hosts[r["host"]]
        parent = r.get("parent")
        if not parent:
            host.children.append(node(r, "container"))
            continue
        g = guests.get((r["host"], parent))
        if g is None:
            guests[(r["host"], parent)] = g = Node(parent, "guest", note="not listed")
            host.children.append(g)
        g.children.append(node(r, "container"))
    return list(hosts.values())


def site_tree(site: Site, states: dict[tuple[str, str], dict] | None = None) -> list[Node]:
    """The inventory as host -> guests -> containers (plan's view).

    states maps (uri, name) to what is known ({"state", "cpuset", "shares", "note"});
    entries not in it show the inventory's values with state "?".
    """
    states = states or {}

    def node(e: Entry) -> Node:
        seen = states.get((e.uri, e.name), {})
        return Node(e.name, e.kind, seen.get("state", "?"),
                    seen.get("cpuset", e.spec.cpu.cpuset), seen.get("shares", e.spec.cpu.shares),
                    seen.get("note", ""))

    roots = []
    for hname in site.inventory.hosts:
        host = Node(hname, "host")
        for e in site.entries:
            if e.host != hname or e.parent:
                continue
            n = node(e)
            if e.kind == "guest":
                n.children = [node(c) for c in site.children(e.name)]
            host.children.append(n)
        roots.append(host)
    return roots


def plan_tree(site: Site, items: list[Any]) -> str:
    """plan's items drawn as the site tree; containers of a guest not reachable yet are
    `pending` (planned once their guest answers), not failures."""
    states: dict[tuple[str, str], dict] = {}
    for item in items:
        if getattr(item, "target", "domain") != "domain":
            continue
        status = item.status
        if item.parent and status in ("waiting", "unreachable"):
            status = "pending"
        states[(item.uri, item.name)] = {"state": status}
    return render_tree(site_tree(site, states))


def render_tree(roots: list[Node]) -> str:
    """ASCII tree lines, e.g. 'hv1 [host]' / '├── db [guest] running' / '│   └── ...'."""
    lines: list[str] = []

    def walk(n: Node, prefix: str, last: bool, top: bool) -> None:
        lines.append(n.label() if top else f"{prefix}{'└── ' if last else '├── '}{n.label()}")
        inner = "" if top else prefix + ("    " if last else "│   ")
        for i, c in enumerate(n.children):
            walk(c, inner, i == len(n.children) - 1, False)

    for r in roots:
        walk(r, "", True, True)
    return "\n".join(lines)
