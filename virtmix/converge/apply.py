"""Run a plan: hosts in parallel, each host's items in dependency order, failures isolated.

Per host: networks, then guests and host containers, then containers nested in guests (once
their guest runs), then removals. Within one phase up to `jobs` items run at once. A failing
item does not stop the others; a nested container whose guest failed is skipped. Every step
is idempotent against what libvirt holds, so an interrupted apply is finished by the next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from virtmix.backend.protocol import Backend
from virtmix.backend.records import is_active_state
from virtmix.converge.desired import desired_domain
from virtmix.converge.documents import DesiredDomain, DesiredNetwork, Op
from virtmix.converge.live import apply_live
from virtmix.converge.observe import ObservedConnection, observe_connection
from virtmix.converge.plan import Item, Options, Plan, build_plan, plan_domain
from virtmix.converge.prepare import prepare
from virtmix.converge.verify import WAIT_SECONDS, Started, guest_reach, wait_ready, watch
from virtmix.errors import BackendError, StateError, VirtmixError
from virtmix.inventory.site import Entry, Site
from virtmix.render.schema_check import check_xml
from virtmix.util import children
from virtmix.util.faults import fault_point
from virtmix.util.polling import wait_until
from virtmix.util.uris import is_local

STOP_TIMEOUT = 30.0        # seconds a guest gets to shut down before it is destroyed
NESTED_WAIT = 180.0        # seconds to wait for a guest's own libvirt to answer


@dataclass
class Outcome:
    item: Item
    status: str             # done | failed | skipped | unchanged
    message: str = ""
    seconds: float = 0.0
    started: Started | None = None  # set when it started a domain: verified before "done"


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
Notice = Callable[[str], None]  # a line for the admin, at once (Ctrl-C: what apply waits for)


@dataclass
class Context:
    site: Site
    conns: dict[str, Backend]
    jobs: int = 4
    report: Report | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    opts: Options = field(default_factory=Options)
    notice: Notice | None = None
    hard_stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C twice
    doing: dict[str, str] = field(default_factory=dict)  # address -> operation under way
    starts: dict[str, list[Started]] = field(default_factory=dict)  # address -> started
    wait: bool = False              # --wait: systemd running/degraded, guests answering
    wait_timeout: float = WAIT_SECONDS
    stop_timeout: float | None = None  # seconds a guest gets to shut down (None: STOP_TIMEOUT)


# -- one item's operations --------------------------------------------------------------
def _stop_children(ctx: Context, item: Item, timeout: float) -> None:
    """A guest's running containers are shut down cleanly before the guest goes, so their
    trees are consistent (a hard stop of the guest would cut them off mid-write)."""
    from virtmix.converge.destroy import stop_cleanly

    for child in ctx.site.children(item.name):
        conn = ctx.conns.get(child.uri)
        if conn is None:
            continue  # its libvirt was not reached: nothing to stop through it
        try:
            if conn.get(child.name).active:
                stop_cleanly(conn, child.name, container=True, timeout=timeout)
        except VirtmixError:
            continue  # not defined there, or gone meanwhile


def _stop(conn: Backend, item: Item, ctx: Context | None = None) -> None:
    """Stop a domain: containers at once; a guest's containers cleanly first, then the
    guest gets its stop timeout to shut down (ACPI), cut short by a second Ctrl-C, then it
    is destroyed."""
    if item.kind == "container" or item.target != "domain":
        conn.destroy(item.name)  # LXC: no guest agent to ask; init gets SIGKILL via the ns
        return
    timeout = ctx.stop_timeout if ctx is not None and ctx.stop_timeout is not None \
        else STOP_TIMEOUT
    if ctx is not None and item.entry is not None:
        _stop_children(ctx, item, timeout)
    try:
        conn.shutdown(item.name)
    except StateError:
        return
    hard = ctx.hard_stop if ctx is not None else None
    down = ("shutoff", "crashed")
    wait_until(lambda: bool(hard is not None and hard.is_set())
               or conn.get(item.name).state in down, timeout=timeout, interval=0.2)
    if conn.get(item.name).state not in down:
        conn.destroy(item.name)


def _define(conn: Backend, item: Item) -> None:
    """Define item.xml; validated here against the local copy of libvirt's schemas when the
    daemon is local (the daemon's own validation costs ~17 ms a document), by the daemon
    otherwise (its libvirt version may differ)."""
    assert item.xml is not None, "define/redefine items carry their document"
    if is_local(conn.uri):
        check_xml(item.xml, "domain", f"{item.kind} {item.address}")
        conn.define_prevalidated(item.xml)
    else:
        conn.define(item.xml)


def _document(item: Item) -> str:
    """The XML of a define item (plan gives every define and redefine its document)."""
    if item.xml is None:  # pragma: no cover - plan and apply disagree
        raise VirtmixError(f"{item.address}: no document to define")
    return item.xml


def _entry(item: Item) -> Entry:
    """The inventory entry of a domain item (networks and orphans have none)."""
    if item.entry is None:  # pragma: no cover - plan gives these ops to entries only
        raise VirtmixError(f"{item.address}: no inventory entry to prepare")
    return item.entry


def _is_active(conn: Backend, name: str) -> bool:
    # The state alone (2 round trips), not the whole record with its definition (4): this
    # is asked before every start, and each call to a daemon serving 2,000 containers
    # costs it more than to one serving 20.
    return is_active_state(conn.state(name))


def _started(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    """Start item's domain and remember it for the settle watch (and --wait)."""
    conn.start(item.name)
    started.append(Started(conn, item.name, item.address, item.kind,
                           reach=_reach(ctx, item) if ctx.wait else None))


def _reach(ctx: Context, item: Item) -> Callable[[], None] | None:
    if item.kind != "guest" or item.entry is None:
        return None
    return guest_reach(ctx.site, item.entry)


def _start(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    if _is_active(conn, item.name):  # an interrupted apply may have started it
        return
    e = item.entry
    if e is not None and e.parent and "prepare" not in item.ops:
        # A nested tree reused as it is: checked against its marker (and pushed again if a
        # crash left it short) before its container starts from it.
        prepare(ctx.site, e)
    _started(ctx, item, conn, started)


def _stop_if_running(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    if _is_active(conn, item.name):
        _stop(conn, item, ctx)


def _restart(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    _stop_if_running(ctx, item, conn, started)
    prepare(ctx.site, _entry(item))
    _started(ctx, item, conn, started)


def _recreate(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    _stop_if_running(ctx, item, conn, started)
    conn.undefine(item.name)
    prepare(ctx.site, _entry(item))
    _define(conn, item)
    if _entry(item).spec.state == "running":
        _started(ctx, item, conn, started)


def _remove(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    _stop_if_running(ctx, item, conn, started)
    conn.undefine(item.name)


OpRunner = Callable[[Context, Item, Backend, list[Started]], None]
def _move(ctx: Context, item: Item, conn: Backend, started: list[Started]) -> None:
    """Bring the domain over from the connection it is on (plan's status "move")."""
    src = ctx.conns.get(item.move_from)
    if src is None:
        raise BackendError(f"{item.address}: no connection to {item.move_from}, where it is")
    if item.move_mode != "tree":
        from virtmix.converge.move_guest import move_guest, move_options

        moved = move_guest(src, conn, item.name, _document(item), live=item.move_mode == "live",
                           **move_options(ctx.site, _entry(item)))
    else:
        from virtmix.converge.move import move_container
        from virtmix.converge.move_site import hooks_for

        notes: list[str] = []
        moved = move_container(src, conn, item.name, _document(item),
                               hooks_for(ctx.site, _entry(item), item.move_from, notes))
    item.reason = f"moved from {item.move_from}" + (
        f", down {moved.downtime:.2f}s" if moved.downtime else "") + (
        f", tree shifted to the target's id range in {moved.shift:.2f}s" if moved.shift else "")


OPS: dict[Op, OpRunner] = {
    Op.MOVE: _move,
    Op.PREPARE: lambda ctx, item, conn, _s: prepare(ctx.site, _entry(item)),
    Op.DEFINE: lambda ctx, item, conn, _s: _define(conn, item),
    Op.REDEFINE: lambda ctx, item, conn, _s: _define(conn, item),
    Op.START: _start,
    Op.STOP: _stop_if_running,
    Op.RESTART: _restart,
    Op.RECREATE: _recreate,
    Op.LIVE: lambda ctx, item, conn, _s: apply_live(conn, item),
    Op.AUTOSTART: lambda ctx, item, conn, _s: conn.set_autostart(item.name, item.autostart),
    Op.REMOVE: _remove,
    Op.NETWORK_DEFINE: lambda ctx, item, conn, _s: conn.define_network(_document(item)),
    Op.NETWORK_REDEFINE: lambda ctx, item, conn, _s: conn.define_network(_document(item)),
    Op.NETWORK_DNS: lambda ctx, item, conn, _s: conn.update_network_dns(
        item.name, item.live.get("dns_add", []), item.live.get("dns_remove", []),
        live=True, config=False),
    Op.NETWORK_START: lambda ctx, item, conn, _s: conn.start_network(item.name),
    Op.NETWORK_REMOVE: lambda ctx, item, conn, _s: conn.remove_network(item.name),
}


def _run_op(ctx: Context, item: Item, conn: Backend, op: str) -> None:
    started = ctx.starts.setdefault(item.address, [])
    fault_point(f"op-{op}-before")
    OPS[Op(op)](ctx, item, conn, started)  # ValueError on an op plan and apply disagree about
    fault_point(f"op-{op}-after")


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
    if ctx.report and out.started is None:  # a started domain is reported once verified
        ctx.report("end", item, out)
    return out


def _run_ops(ctx: Context, item: Item) -> Outcome:
    if item.status in ("refuse", "unreachable"):
        return Outcome(item, "failed", item.reason)
    conn = ctx.conns.get(item.uri)
    if conn is None:
        return Outcome(item, "failed", f"no connection to {item.uri}")
    t0 = time.monotonic()
    done: list[str] = []
    started = ctx.starts.setdefault(item.address, [])  # what _run_op starts, to verify
    try:
        with children.working_for(item.address):
            for op in item.ops:
                if ctx.hard_stop.is_set():
                    # Between two whole operations: what is done is whole, the rest is
                    # left to the next apply.
                    return Outcome(item, "skipped", "interrupted (Ctrl-C twice) after "
                                   + (", ".join(done) or "nothing"), time.monotonic() - t0)
                ctx.doing[item.address] = op
                _run_op(ctx, item, conn, op)
                done.append(op)
        said = ", ".join(item.ops) + (f" ({item.reason})" if item.status == "move" else "")
        out = Outcome(item, "done", said, time.monotonic() - t0,
                      started=started[-1] if started else None)
    except VirtmixError as exc:
        if ctx.hard_stop.is_set():
            return Outcome(item, "skipped", f"stopped by Ctrl-C twice during {op}: "
                           f"{exc.message}", time.monotonic() - t0)
        out = Outcome(item, "failed", exc.message + (f" ({exc.hint})" if exc.hint else ""),
                      time.monotonic() - t0)
    finally:
        ctx.doing.pop(item.address, None)
    return out


_OP_WORDS = {"prepare": "the rootfs or disks", "define": "the definition",
             "redefine": "the definition", "start": "the start", "stop": "the stop",
             "restart": "the restart", "recreate": "the re-creation",
             "live": "the live changes", "remove": "the removal", "move": "the move",
             "network-define": "the definition", "network-redefine": "the definition",
             "network-start": "the start", "network-remove": "the removal"}


def waiting_for(ctx: Context) -> str:
    """What an interrupted apply still waits for, in words: builds first, by entry."""
    procs = {r.label: r.what for r in children.running()}
    parts = []
    for address, op in sorted(dict(ctx.doing).items()):
        if address in procs:
            parts.append(f"the {procs.pop(address)} of {address}")
        else:
            parts.append(f"{_OP_WORDS.get(op, op)} of {address}")
    parts += [f"the {what}" + (f" of {label}" if label else "") for label, what in procs.items()]
    return ", ".join(parts)


def _on_interrupt(ctx: Context, count: int) -> None:
    """First Ctrl-C: stop starting entries, say what is awaited. Second: kill builds now."""
    say = ctx.notice or (lambda _line: None)
    if count == 1:
        ctx.stop.set()
        what = waiting_for(ctx)
        say("stopping: " + (f"waiting for {what} to finish" if what else "finishing up")
            + "; Ctrl-C again to stop now")
    elif count == 2:
        ctx.hard_stop.set()
        killed = children.kill_all()
        names = ", ".join(r.what + (f" of {r.label}" if r.label else "") for r in killed)
        say("stopping now: " + (f"killed {names}; removing its partial output"
                                if killed else "no build to kill; finishing the operations "
                                "under way (each takes seconds)"))
    else:
        what = waiting_for(ctx)
        say("still stopping" + (f": {what}" if what else "") + " (removing partial output; "
            "nothing is left half-made)")


# -- a host's items, phase by phase ------------------------------------------------------
def _run_phase(ctx: Context, items: list[Item]) -> list[Outcome]:
    if len(items) <= 1 or ctx.jobs <= 1:
        outcomes = [run_item(ctx, i) for i in items]
    else:
        with ThreadPoolExecutor(max_workers=ctx.jobs,
                                thread_name_prefix="virtmix-item") as pool:
            outcomes = list(pool.map(lambda i: run_item(ctx, i), items))
    return _verify_starts(ctx, outcomes)


def _verify_starts(ctx: Context, outcomes: list[Outcome]) -> list[Outcome]:
    """Watch every domain the phase started (one settle window, overlapping), then with
    --wait until ready; a domain that died fails its entry, the others stand."""
    started = [o.started for o in outcomes if o.started is not None]
    if started:
        fault_point("verify-begin")
        watch(started, stop=ctx.stop)
        if ctx.wait:
            wait_ready(started, ctx.wait_timeout)
    for o in outcomes:
        s = o.started
        if s is None:
            continue
        if s.failure:
            o.status, o.message = "failed", s.failure
        elif s.note:
            o.message += f"; {s.note}"
        o.seconds = max(o.seconds, time.monotonic() - s.began)
        if ctx.report:
            ctx.report("end", o.item, o)
    return outcomes


def _desired_network(site: Site, name: str) -> DesiredNetwork:
    from virtmix.converge.desired import network_host, network_uri
    from virtmix.render.templates import render_network

    net = site.networks[name]
    return DesiredNetwork(name, net.host, network_uri(site, name), render_network(site, name),
                          network_host(site, name), net.host not in site.inventory.hosts)


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
        if conn is None and item.uri not in failed and item.parent is not None:
            try:
                conn = ctx.conns[item.uri] = wait_for_guest_libvirt(
                    ctx.site, item.parent, item.uri, timeout=guest_wait_seconds(NESTED_WAIT),
                    stop=ctx.stop)
            except BackendError as exc:
                failed[item.uri] = exc.message + (f" ({exc.hint})" if exc.hint else "")
        if conn is None:
            item.status = "unreachable"
            item.reason = failed.get(item.uri, f"no connection to {item.uri}")
            out.append(item)
            continue
        obs = observe_connection(conn)
        if item.target == "network":  # a network inside the guest (its containers' bridge)
            from virtmix.converge.plan import plan_network

            net = _desired_network(ctx.site, item.name)
            out.append(plan_network(net, obs.networks.get(item.name), ctx.opts,
                                    ctx.site.name))
            continue
        desired = desired_domain(ctx.site, _entry(item))
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
    interrupts = 0
    try:
        # Timed waits, not one blocking wait: the kernel may deliver SIGINT to any thread
        # (a worker, libvirt's), and then only a main thread that wakes up runs Python's
        # handler. A CI run applied all 50 entries of a one-host site before Ctrl-C landed.
        # The loop goes on after a Ctrl-C, so that a second one is seen too.
        pending = set(futures)
        while pending:
            try:
                pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)[1]
            except KeyboardInterrupt:
                interrupts += 1
                result.interrupted = True
                _on_interrupt(ctx, interrupts)
        for fut in futures:
            with contextlib.suppress(KeyboardInterrupt):
                result.outcomes += fut.result()
    finally:
        pool.shutdown(wait=True)
    order = {id(i): n for n, i in enumerate(plan.items)}
    result.outcomes.sort(key=lambda o: order.get(id(o.item), len(order)))
    return result


# -- reading every connection of a site --------------------------------------------------
def connect_and_observe(uris: list[str], *, skip: dict[str, str] | None = None,
                        read: bool = True
                        ) -> tuple[dict[str, Backend], dict[str, ObservedConnection]]:
    """Open and read every URI in parallel; a failure is recorded, not raised. read=False
    only opens them (destroy reads only its own domains, not every domain's live
    definition and cgroups as plan does).

    Returns the open connections, and what was read of every URI: a URI that could not be
    opened or read has no connection and its ObservedConnection.error says why
    (`connection_failures` gives them as a map).
    """
    from virtmix.backend import open_connection

    conns: dict[str, Backend] = {}
    observed: dict[str, ObservedConnection] = {}
    skip = skip or {}

    def one(uri: str) -> tuple[str, Backend | None, ObservedConnection]:
        if uri in skip:
            return uri, None, ObservedConnection(uri, error=skip[uri])
        conn: Backend | None = None
        try:
            conn = open_connection(uri)
            return uri, conn, (observe_connection(conn) if read else ObservedConnection(uri))
        except VirtmixError as exc:
            if conn is not None:  # opened but not readable: not kept half-used
                conn.close()
            return uri, None, ObservedConnection(uri, error=exc.message)

    todo = list(dict.fromkeys(uris))
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
        for uri, conn, obs in pool.map(one, todo):
            if conn is not None:
                conns[uri] = conn
            observed[uri] = obs
    return conns, observed


def connection_failures(observed: dict[str, ObservedConnection]) -> dict[str, str]:
    """URI -> why it could not be opened or read."""
    return {uri: obs.error for uri, obs in observed.items() if obs.error is not None}


def container_hosts(site: Site) -> tuple[list[str], dict[str, str]]:
    """Every connection of the site that may hold its containers, even with none listed
    now (`containers: {}` after `move` took the last one away): hosts' lxc_uri, and the
    libvirt of guests that host containers (URI -> guest)."""
    from virtmix.inventory.model import Guest
    from virtmix.inventory.site import guest_lxc_uri

    hosts = [h.lxc_uri for h in site.inventory.hosts.values()
             if "containers" in h.model_fields_set]
    guests = {}
    for e in site.entries:
        if e.kind == "guest" and isinstance(e.spec, Guest) and (
                "containers" in e.spec.model_fields_set or e.spec.lxc_uri):
            guests[guest_lxc_uri(e.name, e.spec)] = e.name
    return hosts, guests


def observe_and_plan(site: Site, domains: list[DesiredDomain], networks: list[DesiredNetwork],
                     opts: Options, *, read: tuple[dict[str, Backend],
                                                   dict[str, ObservedConnection]] | None = None
                     ) -> tuple[Plan, dict[str, Backend]]:
    """Read host connections first, then those inside guests that run, then plan.

    read: connections already open and read (placement read the hosts first), reused."""
    nested = {d.entry.uri: d.entry.parent for d in domains if d.entry.parent}
    nested |= {n.uri: n.host for n in networks if n.nested}
    top = [d.entry.uri for d in domains if d.entry.uri not in nested]
    top += [n.uri for n in networks if n.uri not in nested]
    host_uris, guest_uris = container_hosts(site)
    top += host_uris  # where a moved container may still be: plan says "move" there
    # ... and a moved guest (`guests: {}` once `move` took the last one away)
    top += [h.uri for h in site.inventory.hosts.values() if "guests" in h.model_fields_set]
    nested |= {u: g for u, g in guest_uris.items() if u not in nested}
    conns, observed = (dict(read[0]), dict(read[1])) if read else ({}, {})
    more_conns, more = connect_and_observe([u for u in top if u not in observed])
    conns |= more_conns
    observed |= more
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


def close_all(conns: dict[str, Backend]) -> None:
    for conn in conns.values():
        conn.close()
