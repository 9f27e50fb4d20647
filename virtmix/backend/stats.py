"""Domain statistics for `virtmix metrics`: libvirt's bulk call where the driver has it.

QEMU answers virConnectGetAllDomainStats with state, CPU time, balloon, block and interface
figures for every domain in one round trip. The LXC driver has no bulk call ("this function
is not supported"): there it returns state, id and definition, and the caller reads the
figures from the containers' cgroups (virtmix.machines.cgroup_stats), which is where
libvirt's own per-domain LXC calls read them from.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import libvirt

from virtmix.backend.records import domain_state_name
from virtmix.backend.translate import translate

_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_BLOCK
          | libvirt.VIR_DOMAIN_STATS_INTERFACE)
_NO_BULK = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}


@dataclass
class DomainStats:
    """One domain's figures; None where the source did not say."""

    name: str
    uuid: str
    state: str
    state_code: int
    id: int | None
    xml: str
    cpu_ns: int | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    source: str = "none"  # bulk | info | cgroup | none

    @property
    def active(self) -> bool:
        return self.id is not None and self.id > 0


def _sum(stats: dict[str, Any], prefix: str, count_key: str, field: str) -> int | None:
    n = stats.get(count_key)
    if n is None:
        return None
    return sum(int(stats.get(f"{prefix}.{i}.{field}", 0)) for i in range(int(n)))


def _from_bulk(rec: DomainStats, s: dict[str, Any]) -> None:
    if "cpu.time" in s:
        rec.cpu_ns = int(s["cpu.time"])
    rss = s.get("balloon.rss") or s.get("balloon.current")
    if rss is not None:
        rec.memory_bytes = int(rss) * 1024
    if "balloon.maximum" in s:
        rec.memory_limit_bytes = int(s["balloon.maximum"]) * 1024
    rec.block_read_bytes = _sum(s, "block", "block.count", "rd.bytes")
    rec.block_write_bytes = _sum(s, "block", "block.count", "wr.bytes")
    rec.net_rx_bytes = _sum(s, "net", "net.count", "rx.bytes")
    rec.net_tx_bytes = _sum(s, "net", "net.count", "tx.bytes")
    rec.source = "bulk"


def _record(dom: libvirt.virDomain, state_code: int | None) -> DomainStats | None:
    try:
        if state_code is None:
            state_code = dom.state()[0]
        dom_id = dom.ID()
        return DomainStats(dom.name(), dom.UUIDString(), domain_state_name(state_code),
                           state_code, dom_id if dom_id > 0 else None, dom.XMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None  # undefined while we read
        raise


def _parallel(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if len(items) < 32:
        return [func(i) for i in items]
    with ThreadPoolExecutor(max_workers=4) as pool:  # RPCs multiplexed on one connection
        return list(pool.map(func, items))


def domain_stats(conn: Any) -> tuple[list[DomainStats], bool]:
    """Every domain of a Connection with what libvirt reports; True when it came in bulk.

    Without bulk figures (the test driver reports only state in bulk) an active domain's
    CPU time and memory come from virDomainGetInfo, unless the driver is LXC (the caller
    reads its cgroups instead)."""
    raw = conn._conn  # noqa: SLF001 - the backend package reading its own connection
    with translate("reading domain statistics", conn.uri):
        try:
            pairs = raw.getAllDomainStats(_STATS, 0)
            bulk = True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _NO_BULK:
                raise
            pairs = [(d, None) for d in raw.listAllDomains(0)]
            bulk = False

        def one(pair: Any) -> DomainStats | None:
            dom, s = pair
            rec = _record(dom, int(s["state.state"]) if s and "state.state" in s else None)
            if rec is None:
                return None
            if s:
                _from_bulk(rec, s)
            if rec.cpu_ns is None and rec.active and raw.getType() != "LXC":
                try:
                    _state, max_kib, kib, _vcpus, cpu_ns = dom.info()
                    rec.cpu_ns, rec.memory_bytes = cpu_ns, kib * 1024
                    rec.memory_limit_bytes = max_kib * 1024
                    rec.source = "info"
                except libvirt.libvirtError:
                    pass
            return rec

        found = _parallel(one, pairs)
    return [r for r in found if r is not None], bulk
