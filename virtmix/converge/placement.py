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
    for r in requests:
        if r.name in decisions:
            continue
        refusals: dict[str, str] = {}
        fits = []
        for name in r.candidates:
            why_not = _refusal(r, hosts.get(name))
            if why_not is None:
                fits.append(hosts[name])
            else:
                refusals[name] = why_not
        if not fits:
            raise PlacementFailure(r.name, _constraint(r, refusals), refusals)
        best, why = _choose(r, fits)
        skipped = [f"{h}: {why_not}" for h, why_not in refusals.items()]
        if skipped:
            why += "; not " + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        best.take(r.memory_kib, r.cpuset, r.anti_affinity)
        decisions[r.name] = Decision(r.name, best.name, r.policy, True, why)
    return [decisions[r.name] for r in requests]


# -- the step between load and plan --------------------------------------------------------
def placement_uris(site: Site) -> list[str]:
    """The connections placement reads: every candidate host's, for the kinds it places."""
    hosts = site.inventory.hosts
    uris: dict[str, None] = {}
    for u in site.unplaced:
        for h in u.candidates:
            uris[u.uri_on(hosts[h])] = None
    return list(uris)


def host_states(site: Site, observed: dict[str, ObservedConnection]) -> dict[str, HostState]:
    """Capacity and use of every inventory host, from its declaration and its daemons."""
    kinds_of: dict[str, set[str]] = {}
    for u in site.unplaced:
        for h in u.candidates:
            kinds_of.setdefault(h, set()).add(u.kind)
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


def _request(site: Site, u: Unplaced, observed: dict[str, ObservedConnection]) -> Request:
    current, recorded = None, ""
    for h in u.candidates:
        obs = observed.get(u.uri_on(site.inventory.hosts[h]))
        dom = obs.domains.get(u.name) if obs and not obs.error else None
        if dom is not None and dom.metadata and dom.metadata.get("site") == site.name:
            current, recorded = h, dom.metadata.get("placed", "")
            break
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
    requests = [_request(site, u, observed) for u in site.unplaced]
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


def observe_and_place(site: Site, *, existing_only: bool = False
                      ) -> tuple[Site, dict[str, Backend], dict[str, ObservedConnection]]:
    """Read every host placement may use (and the hosts of fixed entries, whose domains
    take capacity too), then place. Returns the placed site and what was opened and read,
    for plan to reuse; nothing is read when no entry needs placing."""
    from virtmix.converge.apply import close_all, connect_and_observe

    if not site.unplaced:
        return site, {}, {}
    hosts = site.inventory.hosts
    uris = placement_uris(site) + [u for h in hosts.values() for u in (h.uri, h.lxc_uri)
                                   if any(e.uri == u and not e.parent for e in site.entries)]
    conns, observed = connect_and_observe(list(dict.fromkeys(uris)))
    try:
        placed = place_site(site, observed, existing_only=existing_only)
    except BaseException:
        close_all(conns)
        raise
    return placed, conns, observed
