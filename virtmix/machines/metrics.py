"""`virtmix metrics`: Prometheus figures of every domain on the connections in use.

One scrape reads each connection once: QEMU (and the test driver) through libvirt's bulk
virConnectGetAllDomainStats, LXC containers from their cgroups (host: v1 files read here;
nested in a guest: v2 files, one ssh call per guest). Each sample is labelled with the
domain's site, host, entry, kind, profile and parent, from virtmix's metadata in its
definition (domains virtmix did not define get empty site/profile/parent).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from virtmix.util.identity import VIRTMIX_NS

LABELS = ("site", "host", "entry", "kind", "profile", "parent")
# name -> (type, help, DomainStats attribute or None, scale)
METRICS: dict[str, tuple[str, str, str, float]] = {
    "virtmix_domain_cpu_seconds_total": ("counter", "CPU time used by the domain.",
                                         "cpu_ns", 1e-9),
    "virtmix_domain_memory_usage_bytes": ("gauge", "Memory in use (guests: RSS of QEMU; "
                                          "containers: cgroup usage).", "memory_bytes", 1),
    "virtmix_domain_memory_limit_bytes": ("gauge", "Memory limit (guests: maximum memory; "
                                          "containers: cgroup limit, absent if none).",
                                          "memory_limit_bytes", 1),
    "virtmix_domain_block_read_bytes_total": ("counter", "Bytes read from block devices.",
                                              "block_read_bytes", 1),
    "virtmix_domain_block_write_bytes_total": ("counter", "Bytes written to block devices.",
                                               "block_write_bytes", 1),
    "virtmix_domain_network_receive_bytes_total": ("counter", "Bytes received on the "
                                                   "domain's interfaces (not lo).",
                                                   "net_rx_bytes", 1),
    "virtmix_domain_network_transmit_bytes_total": ("counter", "Bytes sent on the domain's "
                                                    "interfaces (not lo).", "net_tx_bytes", 1),
}


@dataclass
class Scrape:
    """What one read of every connection found."""

    rows: list[tuple[dict[str, str], Any]] = field(default_factory=list)  # labels, stats
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def labels_of(xml: str, name: str, host: str, parent: str | None) -> dict[str, str]:
    meta: dict[str, str] = {}
    root = etree.fromstring(xml.encode())
    node = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    if node is not None:
        meta = dict(node.attrib)
    kind = meta.get("kind") or ("container" if root.get("type") == "lxc" else "guest")
    return {"site": meta.get("site", ""), "host": meta.get("host", host),
            "entry": f"{parent}/{name}" if parent else name, "kind": kind,
            "profile": meta.get("profile", ""), "parent": meta.get("parent", parent or "")}


def _fill_from_cgroups(place, conn, stats: list, errors: list[str]) -> None:
    """LXC: figures from the cgroups, on this machine or inside the guest (a guest that
    cannot be reached over ssh leaves its containers with state only, and an error)."""
    from virtmix.errors import VirtmixError
    from virtmix.hosts import is_local
    from virtmix.machines import cgroup_stats

    active = [s for s in stats if s.active]
    if is_local(place.uri):
        per_id = {s.id: cgroup_stats.local_files(s.name, s.id) for s in active}
    else:
        from virtmix.nesting.ops import is_ssh_uri

        if not is_ssh_uri(place.uri):
            return
        try:
            per_id = cgroup_stats.remote_files(place.uri, [s.id for s in active])
        except VirtmixError as exc:
            errors.append(f"{place.uri}: container figures: {exc.message}")
            return
    for s in active:
        found = cgroup_stats.figures(per_id.get(s.id, {}))
        for key, value in found.items():
            setattr(s, key, value)
        if found:
            s.source = "cgroup"


def scrape(session, host: str | None = None) -> Scrape:
    """Read every reachable connection of an admin Session (see admin.targets)."""
    from virtmix.backend.stats import domain_stats
    from virtmix.errors import VirtmixError

    t0 = time.perf_counter()
    result = Scrape()
    for place, conn in session.reachable():
        if host and place.host != host:
            continue
        try:
            stats, bulk = domain_stats(conn)
            if not bulk and conn.driver == "lxc":
                _fill_from_cgroups(place, conn, stats, result.errors)
        except VirtmixError as exc:
            result.errors.append(f"{place.uri}: {exc.message}")
            continue
        for s in stats:
            result.rows.append((labels_of(s.xml, s.name, place.host, place.parent), s))
    result.errors += session.warnings
    result.seconds = time.perf_counter() - t0
    return result


def families(result: Scrape) -> Iterator[Any]:
    """prometheus_client metric families of one scrape."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = GaugeMetricFamily("virtmix_domain_running", "1 when the domain runs (or is "
                           "paused), 0 when it is shut off.", labels=LABELS)
    state = GaugeMetricFamily("virtmix_domain_state", "libvirt's state number (1 running, "
                              "3 paused, 5 shut off, ...); the word in label state.",
                              labels=(*LABELS, "state"))
    for labels, s in result.rows:
        values = [labels[k] for k in LABELS]
        up.add_metric(values, 1.0 if s.active else 0.0)
        state.add_metric([*values, s.state], float(s.state_code))
    yield up
    yield state
    for name, (kind, doc, attr, scale) in METRICS.items():
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        fam = cls(name.removesuffix("_total") if kind == "counter" else name, doc,
                  labels=LABELS)
        for labels, s in result.rows:
            value = getattr(s, attr)
            if value is not None:
                fam.add_metric([labels[k] for k in LABELS], value * scale)
        yield fam
    took = GaugeMetricFamily("virtmix_scrape_duration_seconds", "Time this scrape took.")
    took.add_metric([], result.seconds)
    yield took
    errors = GaugeMetricFamily("virtmix_scrape_errors", "Connections that could not be read.")
    errors.add_metric([], float(len(result.errors)))
    yield errors


class Collector:
    """A prometheus_client collector that scrapes on every collect() (each HTTP GET)."""

    def __init__(self, make_session, host: str | None = None) -> None:
        self.make_session = make_session
        self.host = host
        self.last: Scrape | None = None

    def collect(self) -> Iterator[Any]:
        session = self.make_session()
        try:
            self.last = scrape(session, self.host)
        finally:
            session.close()
        yield from families(self.last)


def exposition(collector: Collector) -> bytes:
    """The Prometheus text format of one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def serve(collector: Collector, host: str, port: int):
    """Serve /metrics on host:port in a background thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return start_http_server(port, addr=host, registry=registry)
