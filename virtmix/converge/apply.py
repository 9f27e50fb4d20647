"""Run a plan: hosts in parallel, each host's items in dependency order, failures isolated.

Per host: networks, then guests and host containers, then containers nested in guests (once
their guest runs), then removals. Within one phase up to `jobs` items run at once. A failing
item does not stop the others; a nested container whose guest failed is skipped. Every step
is idempotent against what libvirt holds, so an interrupted apply is finished by the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from virtmix.converge.live import apply_live
from virtmix.converge.observe import ObservedConnection, is_local_uri, observe_connection
from virtmix.converge.plan import DesiredDomain, Item, Options, Plan, build_plan, plan_domain
from virtmix.converge.prepare import prepare
from virtmix.errors import BackendError, StateError, VirtmixError
from virtmix.inventory.site import Site
from virtmix.render.schema_check import check_xml
from virtmix.render.templates import render_domain

STOP_TIMEOUT = 30.0        # seconds a guest gets to shut down before it is destroyed
NESTED_WAIT = 180.0        # seconds to wait for a guest's own libvirt to answer


@dataclass
class Outcome:
    item: Item
    status: str             # done | failed | skipped | unchanged
    message: str = ""
    seconds: float = 0.0


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "skipped")]

    @property
    def changed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "done"]


Report = Callable[[str, Item, Outcome | None], None]  # ("start"|"end", item, outcome)


@dataclass
class Context:
    site: Site
    conns: dict[str, Any]
    jobs: int = 4
    report: Report | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    opts: Options = field(default_factory=Options)


# -- one item's operations --------------------------------------------------------------
def _stop(conn: Any, item: Item) -> None:
    if item.kind == "container" or item.target != "domain":
        conn.destroy(item.name)  # LXC: no guest agent to ask; init gets SIGKILL via the ns
        return
    try:
        conn.shutdown(item.name)
    except StateError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if conn.get(item.name).state in ("shutoff", "crashed"):
            return
        time.sleep(0.2)
    conn.destroy(item.name)


def _define(conn: Any, item: Item) -> None:
    """Define item.xml; validated here against the local copy of libvirt's schemas when the
    daemon is local (the daemon's own validation costs ~17 ms a document), by the daemon
    otherwise (its libvirt version may differ)."""
    if is_local_uri(conn.uri):
        check_xml(item.xml, "domain", f"{item.kind} {item.address}")
        conn.define_prevalidated(item.xml)
    else:
        conn.define(item.xml)


def _is_active(conn: Any, name: str) -> bool:
    return conn.get(name).active


def _run_op(ctx: Context, item: Item, conn: Any, op: str) -> None:
    e = item.entry
    if op == "prepare":
        prepare(ctx.site, e)
    elif op in ("define", "redefine"):
        _define(conn, item)
    elif op == "start":
        if not _is_active(conn, item.name):  # an interrupted apply may have started it
            conn.start(item.name)
    elif op == "stop":
        if _is_active(conn, item.name):
            _stop(conn, item)
    elif op == "restart":
        if _is_active(conn, item.name):
            _stop(conn, item)
        prepare(ctx.site, e)
        conn.start(item.name)
    elif op == "recreate":
        if _is_active(conn, item.name):
            _stop(conn, item)
        conn.undefine(item.name)
        prepare(ctx.site, e)
        _define(conn, item)
        if e.spec.state == "running":
            conn.start(item.name)
    elif op == "live":
        apply_live(conn, item)
    elif op == "autostart":
        conn.set_autostart(item.name, item.autostart)
    elif op == "remove":
        if _is_active(conn, item.name):
            _stop(conn, item)
        conn.undefine(item.name)
    elif op == "network-define" or op == "network-redefine":
        conn.define_network(item.xml)
    elif op == "network-dns":
        conn.update_network_dns(item.name, item.live.get("dns_add", []),
                                item.live.get("dns_remove", []), live=True, config=False)
    elif op == "network-start":
        conn.start_network(item.name)
    elif op == "network-remove":
        conn.remove_network(item.name)
    else:  # pragma: no cover - plan and apply disagree
        raise VirtmixError(f"{item.address}: unknown operation {op!r}")


def run_item(ctx: Context, item: Item) -> Outcome:
    """Run one item's operations; any virtmix error fails this item only."""
    if not item.ops and item.status not in ("refuse", "unreachable"):
        return Outcome(item, "unchanged")
    if ctx.stop.is_set():
        # Ctrl-C stops between entries: an entry once begun is finished (define + start).
        return Outcome(item, "skipped", "interrupted before it began")
    if ctx.report:
        ctx.report("start", item, None)
    out = _run_ops(ctx, item)
    if ctx.report:
        ctx.report("end", item, out)
    return out


def _run_ops(ctx: Context, item: Item) -> Outcome:
    if item.status in ("refuse", "unreachable"):
        return Outcome(item, "failed", item.reason)
    conn = ctx.conns.get(item.uri)
    if conn is None or isinstance(conn, VirtmixError):
        return Outcome(item, "failed", str(conn or f"no connection to {item.uri}"))
    t0 = time.monotonic()
    try:
        for op in item.ops:
            _run_op(ctx, item, conn, op)
        out = Outcome(item, "done", ", ".join(item.ops), time.monotonic() - t0)
    except VirtmixError as exc:
        out = Outcome(item, "failed", exc.message + (f" ({exc.hint})" if exc.hint else ""),
                      time.monotonic() - t0)
    return out


# -- a host's items, phase by phase ------------------------------------------------------
def _run_phase(ctx: Context, items: list[Item]) -> list[Outcome]:
    if len(items) <= 1 or ctx.jobs <= 1:
        return [run_item(ctx, i) for i in items]
    with ThreadPoolExecutor(max_workers=ctx.jobs, thread_name_prefix="virtmix-item") as pool:
        return list(pool.map(lambda i: run_item(ctx, i), items))


def _replan_nested(ctx: Context, items: list[Item]) -> list[Item]:
    """Plan containers whose guest was not up when the plan was made, now that it runs."""
    from virtmix.nesting.guests import guest_wait_seconds, wait_for_guest_libvirt

    out = []
    failed: dict[str, str] = {}  # uri -> why: each guest is waited for once, not per item
    for item in items:
        if item.status != "waiting":
            out.append(item)
            continue
        conn = ctx.conns.get(item.uri)
        if not hasattr(conn, "define") and item.uri not in failed:
            try:
                conn = ctx.conns[item.uri] = wait_for_guest_libvirt(
                    ctx.site, item.parent, item.uri, timeout=guest_wait_seconds(NESTED_WAIT),
                    stop=ctx.stop)
            except BackendError as exc:
                failed[item.uri] = exc.message + (f" ({exc.hint})" if exc.hint else "")
        if item.uri in failed:
            item.status, item.reason = "unreachable", failed[item.uri]
            out.append(item)
            continue
        obs = observe_connection(conn)
        desired = DesiredDomain(item.entry, render_domain(ctx.site, item.entry))
        out.append(plan_domain(desired, obs.domains.get(item.name), ctx.site.name, ctx.opts))
    return out


def run_host(ctx: Context, items: list[Item]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    failed_guests: set[str] = set()
    for phase in sorted({i.phase for i in items}):
        batch = [i for i in items if i.phase == phase]
        if phase == 2:
            ready = [i for i in batch if i.parent not in failed_guests]
            outcomes += [Outcome(i, "skipped", f"guest {i.parent} failed")
                         for i in batch if i.parent in failed_guests]
            batch = _replan_nested(ctx, ready)
        done = _run_phase(ctx, batch)
        failed_guests |= {o.item.name for o in done
                          if o.item.kind == "guest" and o.status in ("failed", "skipped")}
        outcomes += done
    return outcomes


def run_plan(ctx: Context, plan: Plan) -> ApplyResult:
    """Run every host's items in parallel; Ctrl-C stops at the next operation boundary."""
    result = ApplyResult()
    hosts = plan.by_host()
    pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="virtmix-host")
    futures = {pool.submit(run_host, ctx, items): h for h, items in hosts.items()}
    try:
        # Timed waits, not one blocking wait: the kernel may deliver SIGINT to any thread
        # (a worker, libvirt's), and then only a main thread that wakes up runs Python's
        # handler. A CI run applied all 50 entries of a one-host site before Ctrl-C landed.
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in done:
                result.outcomes += fut.result()
    except KeyboardInterrupt:
        ctx.stop.set()
        result.interrupted = True
        for fut in futures:
            try:
                result.outcomes += fut.result()
            except KeyboardInterrupt:
                pass
    finally:
        pool.shutdown(wait=True)
    order = {id(i): n for n, i in enumerate(plan.items)}
    result.outcomes.sort(key=lambda o: order.get(id(o.item), len(order)))
    return result


# -- reading every connection of a site --------------------------------------------------
def connect_and_observe(uris: list[str], *, skip: dict[str, str] | None = None
                        ) -> tuple[dict[str, Any], dict[str, ObservedConnection]]:
    """Open and read every URI in parallel; a failure is recorded, not raised."""
    from virtmix.backend import open_connection

    conns: dict[str, Any] = {}
    observed: dict[str, ObservedConnection] = {}
    skip = skip or {}

    def one(uri: str) -> tuple[str, Any, ObservedConnection]:
        if uri in skip:
            return uri, None, ObservedConnection(uri, error=skip[uri])
        try:
            conn = open_connection(uri)
            return uri, conn, observe_connection(conn)
        except VirtmixError as exc:
            return uri, exc, ObservedConnection(uri, error=exc.message)

    todo = list(dict.fromkeys(uris))
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
        for uri, conn, obs in pool.map(one, todo):
            if conn is not None:
                conns[uri] = conn
            observed[uri] = obs
    return conns, observed


def observe_and_plan(site: Site, domains: list[DesiredDomain], networks: list,
                     opts: Options) -> tuple[Plan, dict[str, Any]]:
    """Read host connections first, then those inside guests that run, then plan."""
    nested = {d.entry.uri: d.entry.parent for d in domains if d.entry.parent}
    nested |= {n.uri: n.host for n in networks if n.nested}
    top = [d.entry.uri for d in domains if d.entry.uri not in nested]
    top += [n.uri for n in networks if n.uri not in nested]
    conns, observed = connect_and_observe(top)
    guests = {d.entry.name: d.entry.uri for d in domains if d.entry.kind == "guest"}
    skip = {}
    for uri, guest in nested.items():
        obs = observed.get(guests.get(guest, ""))
        dom = obs.domains.get(guest) if obs else None
        if dom is None or not dom.active:
            skip[uri] = f"guest {guest} is not running"
    if nested:
        more_conns, more = connect_and_observe(list(nested), skip=skip)
        conns |= more_conns
        observed |= more
    hosts = set(site.inventory.hosts)
    return build_plan(site.name, domains, networks, observed, opts, hosts), conns


def close_all(conns: dict[str, Any]) -> None:
    for conn in conns.values():
        if hasattr(conn, "close"):
            conn.close()
