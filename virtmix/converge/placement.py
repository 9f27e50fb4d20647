"""Placement: choose a host for each entry that says `host: auto`, `hosts: [...]` or `group:`.

A step between loading (pure, knows no host) and planning: it takes what the hosts' daemons
reported (virtmix.converge.observe) and the inventory's declared capacity. Its core,
`place`, is a pure function over plain records (table-tested in tests/core/test_placement.py):

- an entry already defined on one of its hosts (found by name, with this site's metadata)
  stays there: a later plan never reshuffles what exists;
- a new entry goes to a candidate host that is reachable, has the memory for it (declared
  `memory:` or the node's, less the memory of every domain there and of the inventory's
  entries still to be created there), is under `max_domains`, has every CPU of its cpuset,
  and holds no member of its anti-affinity group;
- `spread` (default) picks the host with the most free memory (an entry with a cpuset: the
  one where the fewest of those CPUs are pinned already, then the most free memory);
  `pack` the fullest host that still fits. Ties go to the host named first.

The choice is recorded in the domain's metadata (`host=`, `placed="spread"|"pack"`) by the
renderer, so the next plan reads it back from the observed domain.
"""

from __future__ import annotations

import dataclasses
import heapq
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from virtmix.backend.protocol import Backend
from virtmix.converge.observe import ObservedConnection
from virtmix.errors import BackendError, InventoryError
from virtmix.inventory.site import Site, Unplaced
from virtmix.inventory.yamlio import line_of
from virtmix.util.units import format_cpuset, format_kib, parse_cpuset

SPREAD, PACK = "spread", "pack"


# -- the pure core ------------------------------------------------------------------------
@dataclass
class HostState:
    """What one host has and what is already on it (or promised to it)."""

    name: str
    memory_kib: int                       # capacity: declared, or the node's
    cpus: frozenset[int]                  # CPUs a cpuset may name
    max_domains: int | None = None
    used_kib: int = 0                     # memory of the domains there (and to come)
    domains: int = 0
    pinned: dict[int, int] = field(default_factory=dict)  # CPU -> domains whose cpuset has it
    groups: set[str] = field(default_factory=set)         # anti-affinity groups present
    down: str | None = None               # why it could not be read, if it could not

    @property
    def free_kib(self) -> int:
        return self.memory_kib - self.used_kib

    def take(self, memory_kib: int, cpuset: frozenset[int] | None, group: str | None) -> None:
        self.used_kib += memory_kib
        self.domains += 1
        for cpu in cpuset or ():
            self.pinned[cpu] = self.pinned.get(cpu, 0) + 1
        if group:
            self.groups.add(group)


@dataclass(frozen=True)
class Request:
    """One entry to place."""

    name: str
    memory_kib: int
    candidates: tuple[str, ...]
    policy: str = SPREAD
    cpuset: frozenset[int] | None = None
    anti_affinity: str | None = None
    current: str | None = None            # the host it is already defined on
    current_policy: str = ""              # the policy its metadata recorded


@dataclass(frozen=True)
class Decision:
    name: str
    host: str
    policy: str
    new: bool                             # False: it already lived there
    why: str


class PlacementFailure(Exception):
    """No candidate host satisfies an entry's constraints; `constraint` names the binding
    one, `per_host` says why each candidate was refused."""

    def __init__(self, name: str, constraint: str, per_host: dict[str, str]) -> None:
        self.name, self.constraint, self.per_host = name, constraint, per_host
        self.all_down = bool(per_host) and all(r.startswith("unreachable") for r in
                                               per_host.values())
        hosts = "; ".join(f"{h}: {r}" for h, r in per_host.items())
        super().__init__(f"no host satisfies {constraint} for {name} ({hosts})")


def _refusal(r: Request, h: HostState | None) -> str | None:
    """Why host h cannot take r, or None when it can."""
    if h is None:
        return "not a host of this inventory"
    if h.down is not None:
        return f"unreachable ({h.down})"
    if r.anti_affinity and r.anti_affinity in h.groups:
        return f"already holds a member of anti_affinity {r.anti_affinity}"
    if r.cpuset and not r.cpuset <= h.cpus:
        return (f"has no CPU {min(r.cpuset - h.cpus)} for cpuset {format_cpuset(r.cpuset)} "
                f"(cpus {format_cpuset(h.cpus)})")
    if h.max_domains is not None and h.domains >= h.max_domains:
        return f"full: max_domains {h.max_domains} reached"
    if r.memory_kib > h.free_kib:
        return f"full: {format_kib(max(h.free_kib, 0))} free"
    return None


def _constraint(r: Request, refusals: dict[str, str]) -> str:
    """The constraint to name in a failure: the one most candidates ran into."""
    words = {"anti_affinity": f"anti_affinity {r.anti_affinity}",
             "cpuset": f"cpuset {format_cpuset(r.cpuset or frozenset())}",
             "max_domains": "max_domains", "free": f"memory {format_kib(r.memory_kib)}",
             "unreachable": "a reachable host"}
    counts: dict[str, int] = {}
    for reason in refusals.values():
        for key in words:
            if key in reason:
                counts[key] = counts.get(key, 0) + 1
                break
    if not counts:
        return "its host list"
    if len(counts) > 1:
        counts.pop("unreachable", None)  # the hosts that answered say what binds
    return words[max(counts, key=lambda k: counts[k])]


def _overlap(r: Request, h: HostState) -> int:
    return sum(h.pinned.get(c, 0) for c in r.cpuset or ())


def _choose(r: Request, fits: list[HostState]) -> tuple[HostState, str]:
    if r.policy == PACK:
        best = min(fits, key=lambda h: (h.free_kib, -h.domains))
        return best, (f"placed: pack, fullest host that fits, "
                      f"{format_kib(best.free_kib)} free")
    best = min(fits, key=lambda h: (_overlap(r, h), -h.free_kib, h.domains))
    why = f"placed: spread, most free memory {format_kib(best.free_kib)}"
    if r.cpuset and len(fits) > 1:
        why += f", CPUs {format_cpuset(r.cpuset)} pinned by {_overlap(r, best)} there"
    return best, why


def _fits(r: Request, h: HostState) -> bool:
    return (h.down is None and not (r.anti_affinity and r.anti_affinity in h.groups)
            and (h.max_domains is None or h.domains < h.max_domains)
            and r.memory_kib <= h.memory_kib - h.used_kib
            and (not r.cpuset or r.cpuset <= h.cpus))


class _SpreadQueue:
    """The candidates of one host list by most free memory, fewest domains, list order:
    what spread picks without a cpuset, in O(log n) a request for a fleet of hosts.

    Lazy: a host's entry is refreshed when popped if the host changed since (placements only
    take memory, so a stale entry never ranks a host lower than it really is)."""

    def __init__(self, candidates: tuple[str, ...], hosts: dict[str, HostState]) -> None:
        self.heap = [(-h.free_kib, h.domains, i, h.name) for i, h in
                     enumerate(hosts[c] for c in candidates if c in hosts)]
        heapq.heapify(self.heap)
        self.hosts = hosts

    def pick(self, r: Request) -> HostState | None:
        rejected = []
        found = None
        while self.heap:
            neg_free, domains, i, name = heapq.heappop(self.heap)
            h = self.hosts[name]
            if (-neg_free, domains) != (h.free_kib, h.domains):
                heapq.heappush(self.heap, (-h.free_kib, h.domains, i, name))
                continue
            if _fits(r, h):
                found = (neg_free, domains, i, name)
                break
            if h.down is None and (h.max_domains is None or h.domains < h.max_domains):
                rejected.append((neg_free, domains, i, name))  # may fit a smaller entry
        for entry in rejected + ([found] if found else []):
            heapq.heappush(self.heap, entry)  # the chosen one is refreshed when next popped
        return self.hosts[found[3]] if found else None


def place(requests: list[Request], hosts: dict[str, HostState]) -> list[Decision]:
    """A host for every request, in order; raises PlacementFailure for the first that has
    none. Mutates `hosts` (each choice takes its capacity) so that callers can show the
    result. Existing placements are honoured first, so new entries see their groups."""
    decisions: dict[str, Decision] = {}
    for r in requests:
        if r.current is not None and r.current in hosts:
            policy = r.current_policy or r.policy
            decisions[r.name] = Decision(r.name, r.current, policy, False,
                                         f"placed earlier ({policy}), kept")
            if r.anti_affinity:  # its memory and CPUs are counted from the domain itself
                hosts[r.current].groups.add(r.anti_affinity)
    queues: dict[tuple[str, ...], _SpreadQueue] = {}
    down_of: dict[tuple[str, ...], list[str]] = {}
    for r in requests:
        if r.name in decisions:
            continue
        best: HostState | None = None
        if r.policy == SPREAD and not r.cpuset:
            queue = queues.get(r.candidates)
            if queue is None:
                queue = queues[r.candidates] = _SpreadQueue(r.candidates, hosts)
            best = queue.pick(r)
            why = f"placed: spread, most free memory {format_kib(best.free_kib)}" if best \
                else ""
        else:
            fits = [hosts[c] for c in r.candidates if c in hosts and _fits(r, hosts[c])]
            if fits:
                best, why = _choose(r, fits)
        if best is not None:  # say which hosts it could not go to because they were down
            if r.candidates not in down_of:
                down_of[r.candidates] = [c for c in r.candidates
                                         if c not in hosts or hosts[c].down is not None]
            refusals = {c: _refusal(r, hosts.get(c)) or "" for c in down_of[r.candidates]}
        else:
            refusals = {c: _refusal(r, hosts.get(c)) or "" for c in r.candidates}
        if best is None:
            raise PlacementFailure(r.name, _constraint(r, refusals), refusals)
        if refusals:
            why += "; not " + "; ".join(f"{h}: {w}" for h, w in list(refusals.items())[:3])
            why += " ..." if len(refusals) > 3 else ""
        best.take(r.memory_kib, r.cpuset, r.anti_affinity)
        decisions[r.name] = Decision(r.name, best.name, r.policy, True, why)
    return [decisions[r.name] for r in requests]


# -- the step between load and plan --------------------------------------------------------
def placement_uris(site: Site) -> list[str]:
    """The connections placement reads: every candidate host's, for the kinds it places."""
    hosts = site.inventory.hosts
    uris: dict[str, None] = {}
    for kind, candidates in {(u.kind, u.candidates) for u in site.unplaced}:
        for h in candidates:
            uris[hosts[h].lxc_uri if kind == "container" else hosts[h].uri] = None
    return list(uris)


def host_states(site: Site, observed: dict[str, ObservedConnection]) -> dict[str, HostState]:
    """Capacity and use of every inventory host, from its declaration and its daemons."""
    kinds_of: dict[str, set[str]] = {}
    for kind, candidates in {(u.kind, u.candidates) for u in site.unplaced}:
        for h in candidates:
            kinds_of.setdefault(h, set()).add(kind)
    states: dict[str, HostState] = {}
    for hname, host in site.inventory.hosts.items():
        needed = [host.lxc_uri if k == "container" else host.uri
                  for k in sorted(kinds_of.get(hname, ()))]
        uris = list(dict.fromkeys(needed + [u for u in (host.uri, host.lxc_uri)
                                            if u in observed]))
        conns = [observed[u] for u in uris if u in observed]
        errors = [observed[u].error or "" if u in observed else f"{u} was not read"
                  for u in dict.fromkeys(needed)
                  if u not in observed or observed[u].error]
        node = next((c.node for c in conns if c.node is not None), None)
        memory = host.memory if host.memory is not None else (node.memory_kib if node else 0)
        cpus = (parse_cpuset(host.cpus) if host.cpus is not None
                else frozenset(range(node.cpus)) if node else frozenset())
        state = HostState(hname, memory, cpus, host.max_domains,
                          down="; ".join(errors) if errors else None)
        present: set[tuple[str, str]] = set()
        for c in conns:
            if c.error:
                continue
            for d in c.domains.values():
                present.add((c.uri, d.name))
                cs = d.config.get("vcpu_cpuset")
                state.take(int(d.config.get("memory_kib") or 0),
                           parse_cpuset(cs) if cs else None, None)
        for e in site.entries:  # fixed entries: promised to their host, present or not
            if e.host != hname or e.parent:
                continue
            if (e.uri, e.name) not in present:
                cs = e.spec.cpu.cpuset
                state.take(e.memory_kib, parse_cpuset(cs) if cs else None, None)
            if e.spec.anti_affinity:
                state.groups.add(e.spec.anti_affinity)
        states[hname] = state
    return states


def _existing(site: Site, observed: dict[str, ObservedConnection]
              ) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, name) -> (host, recorded policy) of every domain of this site on any host,
    first host in inventory order; read once for all entries."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for hname, host in site.inventory.hosts.items():
        for kind, uri in (("container", host.lxc_uri), ("guest", host.uri)):
            obs = observed.get(uri)
            if obs is None or obs.error:
                continue
            for dom in obs.domains.values():
                meta = dom.metadata
                if meta and meta.get("site") == site.name:
                    out.setdefault((kind, dom.name), (hname, meta.get("placed", "")))
    return out


def _request(u: Unplaced, existing: dict[tuple[str, str], tuple[str, str]]) -> Request:
    current, recorded = existing.get((u.kind, u.name), (None, ""))
    if current is not None and current not in u.candidates:
        current, recorded = None, ""  # on a host it may no longer use: not ours to keep
    cs = u.spec.cpu.cpuset
    return Request(u.name, u.memory_kib, u.candidates, u.policy,
                   parse_cpuset(cs) if cs else None, u.spec.anti_affinity, current, recorded)


def place_site(site: Site, observed: dict[str, ObservedConnection], *,
               existing_only: bool = False) -> Site:
    """The site with every unplaced entry on its host (a copy; `site` is unchanged).

    existing_only: place only entries already defined somewhere (for destroy and the admin
    verbs, which act on what exists); the others are left out.
    Raises InventoryError naming the entry and the constraint no host satisfies, or
    BackendError when every candidate host was unreachable."""
    if not site.unplaced:
        return site
    existing = _existing(site, observed)
    requests = [_request(u, existing) for u in site.unplaced]
    if existing_only:
        requests = [r for r in requests if r.current is not None]
    try:
        decisions = place(requests, host_states(site, observed))
    except PlacementFailure as exc:
        u = next(x for x in site.unplaced if x.name == exc.name)
        if exc.all_down:
            raise BackendError(f"cannot place {u.keypath}: {exc}") from None
        keypath = tuple(u.keypath.split("."))
        try:
            line = line_of(site.path.read_text(), keypath)
        except OSError:
            line = None
        raise InventoryError(str(exc), file=str(site.path), key=u.keypath, line=line,
                             hint="free a host, add hosts or raise their capacity "
                             "(memory:, max_domains:), or relax the entry's constraints"
                             ) from None
    by_name = {u.name: u for u in site.unplaced}
    entries = list(site.entries)
    for d in decisions:
        u = by_name[d.name]
        entries += u.entries_on(d.host, site.inventory.hosts[d.host], placed=d.policy,
                                why=d.why if d.new else "")
    return dataclasses.replace(site, entries=entries, unplaced=[])


def observe_and_place(site: Site, *, existing_only: bool = False,
                      read: dict[str, Backend] | None = None
                      ) -> tuple[Site, dict[str, Backend], dict[str, ObservedConnection]]:
    """Read every host placement may use (and the hosts of fixed entries, whose domains
    take capacity too), then place. Returns the placed site and what was opened and read,
    for plan to reuse; nothing is read when no entry needs placing.

    read: connections already open (a fleet kept connected); they are read, not reopened,
    and any other URI is opened."""
    from virtmix.converge.apply import close_all, connect_and_observe
    from virtmix.converge.observe import observe_connection

    if not site.unplaced:
        return site, {}, {}
    hosts = site.inventory.hosts
    uris = placement_uris(site) + [u for h in hosts.values() for u in (h.uri, h.lxc_uri)
                                   if any(e.uri == u and not e.parent for e in site.entries)]
    uris = list(dict.fromkeys(uris))
    given = {u: c for u, c in (read or {}).items() if u in uris}
    conns, observed = connect_and_observe([u for u in uris if u not in given])
    conns |= given
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(given)))) as pool:
        observed |= dict(zip(given, pool.map(observe_connection, given.values()), strict=True))
    try:
        placed = place_site(site, observed, existing_only=existing_only)
    except BaseException:
        close_all({u: c for u, c in conns.items() if u not in given})
        raise
    return placed, conns, observed
