"""`virtmix watch`: lifecycle events of a site's domains, and drift flagged as it happens.

A managed domain (one of the inventory's entries, or without an inventory any domain with
virtmix's metadata) that is started, stopped, suspended, resumed, redefined or undefined
by something other than virtmix is drift. virtmix's own operations leave marks
(virtmix.util.oplog) around their libvirt calls; an event inside such a window is virtmix's.
"""

from __future__ import annotations

import datetime as dt
import queue
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from virtmix.util.identity import VIRTMIX_NS
from virtmix.util.oplog import is_own

DRIFT_EVENTS = {"defined", "undefined", "started", "stopped", "suspended", "resumed",
                "crashed"}
WORDS = {("defined", "added"): "defined", ("defined", "updated"): "redefined"}


def _meta(xml: str | None) -> dict[str, str] | None:
    if not xml:
        return None
    try:
        node = etree.fromstring(xml.encode()).find(f"metadata/{{{VIRTMIX_NS}}}entry")
    except etree.XMLSyntaxError:
        return None
    return dict(node.attrib) if node is not None else None


@dataclass
class Watched:
    """What `watch` follows: managed domains by (uri, name), and the places' hosts."""

    site: str | None = None
    managed: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    hosts: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # uri -> host, parent
    follow_any_virtmix: bool = True  # without an inventory: whatever carries virtmix metadata


def from_site(site, places) -> Watched:
    w = Watched(site=site.name, follow_any_virtmix=False)
    for e in site.entries:
        w.managed[(e.uri, e.name)] = {"site": site.name, "host": e.host, "entry": e.address,
                                      "kind": e.kind, "parent": e.parent or ""}
    for p in places:
        w.hosts[p.uri] = (p.host, p.parent)
    return w


def from_connections(found: list[tuple[Any, Any]]) -> Watched:
    """(place, connection) pairs: every domain with virtmix metadata is followed."""
    w = Watched()
    for place, conn in found:
        w.hosts[place.uri] = (place.host, place.parent)
        for rec in conn.list_domains():
            if rec.metadata is not None:
                w.managed[(place.uri, rec.name)] = _labels(rec.metadata, rec.name, place)
    return w


def _labels(meta: dict[str, str], name: str, place_or_host: Any) -> dict[str, str]:
    host, parent = (place_or_host.host, place_or_host.parent) if hasattr(
        place_or_host, "host") else place_or_host
    parent = meta.get("parent", parent or "")
    return {"site": meta.get("site", ""), "host": meta.get("host", host),
            "entry": f"{parent}/{name}" if parent else name, "kind": meta.get("kind", ""),
            "parent": parent}


def classify(w: Watched, ev, ops_dir=None) -> dict[str, Any]:
    """One event as printed: what happened, to which entry, and whether it is drift."""
    key = (ev.uri, ev.name)
    labels = w.managed.get(key)
    if ev.event == "defined" and w.follow_any_virtmix:
        meta = _meta(ev.xml)
        if meta is not None and (w.site is None or meta.get("site") == w.site):
            labels = w.managed[key] = _labels(meta, ev.name, w.hosts.get(ev.uri, ("?", None)))
    host, parent = w.hosts.get(ev.uri, ("?", None))
    own = is_own(ev.uri, ev.name, ev.time, ops_dir)
    what = WORDS.get((ev.event, ev.detail), ev.event)
    drift = labels is not None and not own and ev.event in DRIFT_EVENTS
    rec = {
        "time": dt.datetime.fromtimestamp(ev.time, dt.UTC).isoformat(timespec="milliseconds"),
        "uri": ev.uri, "host": (labels or {}).get("host", host), "name": ev.name,
        "entry": (labels or {}).get("entry", f"{parent}/{ev.name}" if parent else ev.name),
        "event": what, "detail": ev.detail, "managed": labels is not None,
        "site": (labels or {}).get("site", ""), "origin": "virtmix" if own else "outside",
        "drift": drift,
    }
    if drift:
        rec["message"] = f"{rec['entry']} was {what} outside virtmix ({ev.detail})"
    if ev.event == "undefined" and w.follow_any_virtmix:
        w.managed.pop(key, None)
    return rec


def line(rec: dict[str, Any]) -> str:
    text = (f"{rec['time']} {rec['host']} {rec['entry']}: {rec['event']} ({rec['detail']})"
            f" by {rec['origin']}")
    return text + (f"  DRIFT: {rec['message']}" if rec["drift"] else "")


def next_event(stream, timeout: float):
    """The next event of an EventStream, or None after timeout."""
    try:
        return stream.events.get(timeout=timeout)
    except queue.Empty:
        return None
