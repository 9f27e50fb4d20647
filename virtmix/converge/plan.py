"""Desired (the rendered inventory) vs observed (virtmix.converge.observe) -> ordered actions. Pure.

Each domain or network of the inventory becomes one Item with the field changes found and
the operations apply will run for it, in dependency order (networks, then guests and host
containers, then containers nested in guests). Every change is marked `live` (applied to
the running domain, no restart), `restart` (takes effect at the next start) or `recreate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from virtmix.converge.documents import DesiredDomain, DesiredNetwork
from virtmix.converge.observe import (
    Fields,
    ObservedConnection,
    ObservedDomain,
    ObservedNetwork,
    network_fields,
    owned_fields,
)
from virtmix.converge.plan_xml import adapt_domain_xml, adapt_network_xml, xml_diff
from virtmix.domain import tunables
from virtmix.domain.tunables import CONFIG_ONLY, CONTAINER, GUEST, LIVE, RECREATE, RESTART
from virtmix.inventory.site import Entry
from virtmix.util.identity import network_uuid, owns_network

# How a change of each owned field reaches a running domain (a guest's modes; a container's
# differ where its row in virtmix.domain.tunables says so): derived, never written here.
FIELD_MODES = tunables.field_modes(GUEST)


def field_mode(name: str, kind: str, cgroups: bool = True) -> str:
    """The mode of a change of `name` for a container or guest (see Tunable.mode)."""
    row = tunables.BY_FIELD.get(name)
    return row.mode(kind, cgroups) if row else RESTART


@dataclass
class Change:
    field: str
    before: Any
    after: Any
    mode: str


@dataclass
class Item:
    """What apply does to one domain or network."""

    target: str            # "domain" | "network"
    kind: str              # container | guest | network
    name: str
    address: str           # NAME, or GUEST/NAME for nested containers
    uri: str
    host: str
    phase: int             # 0 networks, 1 guests and host containers, 2 nested containers
    status: str  # create|update|ok|move|remove|orphan|refuse|unreachable|waiting
    ops: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)   # field -> value to set live
    pending_restart: list[str] = field(default_factory=list)
    reason: str = ""
    xml: str | None = None        # the definition apply will (re)define
    diff: str = ""                # owned-part XML diff, observed -> desired
    entry: Entry | None = None
    parent: str | None = None
    state: str | None = None      # the domain's state as observed
    autostart: bool = False
    placement: str = ""           # why placement chose its host (new placements only)
    move_from: str = ""           # status "move": the URI the domain is on now
    move_from_host: str = ""      # ... and the inventory host its metadata names
    move_mode: str = ""           # "tree" (containers: copied), "live" or "cold" (guests)

    @property
    def pending(self) -> bool:
        return bool(self.ops) or self.status in ("refuse", "waiting", "unreachable")


@dataclass
class Plan:
    site: str
    items: list[Item]
    prune: bool = False
    # What the plan was made from, by URI (ObservedConnection): saved plans fingerprint it.
    observed: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def pending(self) -> list[Item]:
        return [i for i in self.items if i.pending]

    def by_host(self) -> dict[str, list[Item]]:
        out: dict[str, list[Item]] = {}
        for item in self.items:
            out.setdefault(item.host, []).append(item)
        return out


@dataclass(frozen=True)
class Options:
    prune: bool = False
    adopt: bool = False
    restart: bool = False


def _same(name: str, want: Any, have: Any) -> bool:
    if name in ("os.machine", "os.arch") and want is None:
        return True  # libvirt picks the default; virtmix does not own it then
    if name == "os.machine" and isinstance(have, str) and isinstance(want, str):
        # 'pc' is stored as 'pc-i440fx-7.2', 'q35' as 'pc-q35-7.2'.
        return have == want or have.startswith((f"{want}-", f"pc-{want}-"))
    return bool(want == have)


def _kind(fields: Fields) -> str:
    return CONTAINER if fields.get("type") == "lxc" else GUEST


def diff_fields(want: Fields, have: Fields, names: Any = None,
                cgroups: bool = True) -> list[Change]:
    """The owned fields that differ, each with how its change reaches a running domain.

    cgroups: whether the domain's limits are kernel cgroups (the real LXC driver), so a
    container's `memory:` can change live.
    """
    out = []
    kind = _kind(want)
    for name in names or FIELD_MODES:
        if name in want or name in have:
            w, h = want.get(name), have.get(name)
            if not _same(name, w, h):
                mode = field_mode(name, kind, cgroups)
                if name == "type" and "lxc" in (w, h):
                    mode = RECREATE  # a container cannot become a guest in place
                out.append(Change(name, h, w, mode))
    return out


def _foreign_reason(obs: ObservedDomain, site: str, uri: str) -> str | None:
    if obs.metadata is None:
        return (f"domain {obs.name} on {uri} exists and was not defined by virtmix (no virtmix "
                "metadata); rename the entry, remove that domain, or apply --adopt to take it "
                "over")
    owner = obs.metadata.get("site")
    if owner is None and obs.metadata.get("created-by"):
        return (f"domain {obs.name} on {uri} was made by `virtmix {obs.metadata['created-by']}`"
                f", outside any inventory; apply --adopt takes it into site {site!r}")
    if owner != site:
        return (f"domain {obs.name} on {uri} belongs to virtmix site {owner!r} (inventory "
                f"{obs.metadata.get('inventory')}), not {site!r}; apply --adopt takes it over")
    return None


def _running_cpuset(live: Fields, cgroup_cpuset: str | None, lxc: bool) -> str | None:
    """The CPUs a running domain really uses.

    Containers: their cpuset cgroup (written directly, the running XML never shows it).
    Guests: a live vCPU pinning that gives every vCPU the same set is what apply does for
    <vcpu cpuset>, and the running XML keeps the old cpuset attribute.
    """
    configured: str | None = live.get("vcpu_cpuset")
    if lxc:
        return cgroup_cpuset if cgroup_cpuset is not None else configured
    pins: set[str] = {cpus for _vcpu, cpus in live.get("cputune.vcpupin", ())}
    if len(pins) == 1 and len(live.get("cputune.vcpupin", ())) == live.get("vcpus"):
        return pins.pop()
    return configured


def _memory_limit(fields: Fields) -> int | None:
    """A container's effective memory cgroup limit: its hard limit, else its `memory:`.

    Both write the same cgroup file (memory.limit_in_bytes / memory.max); libvirt applies
    <memtune><hard_limit> after <memory>, so the hard limit wins when set.
    """
    hard = fields.get("memtune.hard_limit")
    if hard is not None and hard < tunables.UNLIMITED_KIB:
        return int(hard)
    memory = fields.get("memory_kib")
    return int(memory) if memory is not None else None


def _live_targets(want: Fields, obs: ObservedDomain, v2: bool) -> dict[str, Any]:
    """Live-tunable fields whose running value differs from the wanted one."""
    out: dict[str, Any] = {}
    live = obs.live or {}
    kind = _kind(want)
    lxc = kind == CONTAINER
    limits = lxc and obs.cgroups  # a container whose memory is a kernel cgroup limit
    for name in sorted(tunables.live_fields(kind, obs.cgroups)):
        if name == "memory_kib" or (limits and name == "memtune.hard_limit"):
            continue  # both are the container's one memory limit: see below
        target = want.get(name)
        current = live.get(name)
        if name == "vcpu_cpuset":
            current = _running_cpuset(live, obs.live_cpuset, lxc)
        if target is None or target == ():
            default = tunables.removed_value(name, kind, v2, want)
            if default is not None and current not in (None, default) and \
                    obs.config.get(name) is not None:
                out[name] = default  # a setting was removed from the inventory
            continue
        if target != current:
            out[name] = target
    if limits:
        # A removed hard limit falls back to `memory:`, and a new `memory:` is applied
        # through the hard limit (libvirt cannot raise a running container's <memory>).
        target, current = _memory_limit(want), _memory_limit(live)
        if target is not None and target != current:
            out["memtune.hard_limit"] = target
    return out


def plan_domain(d: DesiredDomain, obs: ObservedDomain | None, site: str,
                opts: Options) -> Item:
    e = d.entry
    spec = e.spec
    item = Item("domain", e.kind, e.name, e.address, e.uri, e.host, 2 if e.parent else 1,
                "ok", entry=e, parent=e.parent, autostart=spec.autostart)
    running = spec.state == "running"
    if obs is None:
        item.placement = e.placed_why
        item.status, item.xml = "create", d.xml
        item.ops = ["prepare", "define"] + (["start"] if running else [])
        item.ops += ["autostart"] if spec.autostart else []
        return item
    item.state = obs.state
    reason = _foreign_reason(obs, site, e.uri)
    if reason and not opts.adopt:
        item.status, item.reason = "refuse", reason
        return item
    explicit = {i for i, iface in enumerate(spec.interfaces) if iface.mac}
    item.xml = adapt_domain_xml(d.xml, obs.uuid, obs.config.get("interfaces", ()), explicit)
    want = owned_fields(item.xml)
    item.changes = diff_fields(want, obs.config, cgroups=obs.cgroups)
    item.diff = xml_diff(obs.xml, item.xml, e.address) if item.changes else ""
    modes = {c.mode for c in item.changes}
    if item.changes:
        item.ops.append("redefine")
    if reason:
        item.reason = f"adopting: {reason.split(';')[0]}"
    if obs.active:
        _plan_running(item, want, obs, running, opts, RECREATE in modes, d.cgroups == "v2")
    elif running:
        item.ops += ["prepare", "start"]
    if obs.autostart != spec.autostart:
        item.ops.append("autostart")
        item.changes.append(Change("autostart", obs.autostart, spec.autostart, LIVE))
    item.status = "update" if item.ops else "ok"
    return item


def _plan_running(item: Item, want: Fields, obs: ObservedDomain, running: bool,
                  opts: Options, recreate: bool, v2: bool) -> None:
    if not running:
        item.ops.append("stop")
        return
    if recreate:
        item.ops = ["recreate"]
        return
    restart = [c.field for c in diff_fields(want, obs.live or obs.config, cgroups=obs.cgroups)
               if c.mode == RESTART and c.field not in CONFIG_ONLY]
    if restart and opts.restart:
        item.ops.append("restart")
        return
    item.pending_restart = restart
    item.live = _live_targets(want, obs, v2)
    if item.live:
        item.ops.append("live")


def plan_network(d: DesiredNetwork, obs: ObservedNetwork | None, opts: Options,
                 site: str = "") -> Item:
    item = Item("network", "network", d.name, d.name, d.uri, d.inv_host or d.host,
                2 if d.nested else 0, "ok", parent=d.host if d.nested else None)
    if obs is None:
        item.status, item.xml, item.ops = "create", d.xml, ["network-define", "network-start"]
        return item
    if not owns_network(obs.uuid, site, d.host, d.name) and not opts.adopt:
        item.status = "refuse"
        item.reason = (f"network {d.name} on {d.uri} exists and was not defined by virtmix "
                       f"for site {site!r} (its UUID is not this site's: another site or "
                       "another tool made it); rename it in the inventory or apply --adopt "
                       "to take it over")
        return item
    item.xml = adapt_network_xml(d.xml, obs.uuid)
    want, have = network_fields(item.xml), obs.fields
    for name in ("mode", "bridge", "ipv4", "dhcp", "dhcp_hosts", "dns_hosts"):
        if want[name] != have[name] and not (name == "bridge" and want[name] is None):
            mode = LIVE if name == "dns_hosts" else RESTART
            item.changes.append(Change(name, have[name], want[name], mode))
    if item.changes:
        item.ops.append("network-redefine")
        item.diff = xml_diff(obs.xml, item.xml, f"network {d.name}")
    running = obs.live_fields["dns_hosts"] if obs.active and obs.live_fields else None
    if running is not None and running != want["dns_hosts"]:
        # Names reach the running dnsmasq with virNetworkUpdate, without a restart.
        item.live["dns_add"] = [h for h in want["dns_hosts"] if h not in running]
        item.live["dns_remove"] = [h for h in running if h not in want["dns_hosts"]]
        item.ops.append("network-dns")
    if not obs.active:
        item.ops.append("network-start")
    item.status = "update" if item.ops else "ok"
    return item


def _orphans(site: str, desired: set[tuple[str, str]], conn: ObservedConnection,
             opts: Options, hosts: set[str], desired_names: set[str] | None = None
             ) -> list[Item]:
    # Two URIs may reach one daemon (lxc:///system and lxc+ssh://root@127.0.0.1/system):
    # a name the inventory wants on any connection is never an orphan.
    wanted = desired_names if desired_names is not None else {n for _u, n in desired}
    out = []
    for obs in conn.domains.values():
        meta = obs.metadata
        if meta is None or meta.get("site") != site or obs.name in wanted:
            continue
        kind = meta.get("kind", "container")
        item = Item("domain", kind, obs.name, obs.name, conn.uri, meta.get("host", "?"),
                    3, "orphan", state=obs.state)
        if opts.prune:
            item.status, item.ops = "remove", ["remove"]
        out.append(item)
    for net in conn.networks.values():
        if "network:" + net.name in wanted:
            continue
        # Only a UUID derived from THIS site's name: another site's network (even on a
        # host it also calls `local`) and pre-site networks are never orphans here.
        if any(net.uuid == network_uuid(site, h, net.name) for h in hosts):
            item = Item("network", "network", net.name, net.name, conn.uri, "?", 4, "orphan")
            if opts.prune:
                item.status, item.ops = "remove", ["network-remove"]
            out.append(item)
    return out


def _site_domains(site: str, observed: dict[str, ObservedConnection]
                  ) -> dict[str, list[tuple[str, ObservedDomain]]]:
    """name -> [(uri, domain)] of this site's domains on every connection read."""
    out: dict[str, list[tuple[str, ObservedDomain]]] = {}
    for uri, conn in observed.items():
        if conn.error:
            continue
        for obs in conn.domains.values():
            if obs.metadata is not None and obs.metadata.get("site") == site:
                out.setdefault(obs.name, []).append((uri, obs))
    return out


def guest_move(state: str | None, src_uri: str, dst_uri: str, src_type: str | None = None,
               dst_type: str | None = None) -> tuple[str, str]:
    """("live" or "cold", why not live) for a guest going from src_uri to dst_uri: libvirt
    migrates a running guest live between two QEMU daemons, with the same domain type
    (kvm cannot become qemu while it runs); otherwise it moves cold (shut down, its disks
    copied, defined and started there)."""
    qemu = all(u.split(":", 1)[0].split("+", 1)[0] == "qemu" for u in (src_uri, dst_uri))
    if not qemu:
        return "cold", "libvirt migrates only between two QEMU daemons"
    if state not in ("running", "blocked"):
        return "cold", f"it is not running ({state or 'unknown'})"
    if src_type and dst_type and src_type != dst_type:
        return "cold", (f"virt_type {src_type} where it runs, {dst_type} on the target: "
                        "a running guest cannot change it")
    return "live", ""


def move_mode(kind: str, state: str | None, src_uri: str, dst_uri: str) -> str:
    """How a domain gets from src_uri to dst_uri: containers by copying their tree
    (converge/move.py, "tree"); guests "live" or "cold" (guest_move)."""
    if kind == CONTAINER:
        return "tree"
    return guest_move(state, src_uri, dst_uri)[0]


def plan_move(d: DesiredDomain, src_uri: str, obs: ObservedDomain) -> Item:
    """An entry whose domain is on another connection of the site: move it, keeping its
    UUID and MACs (never destroy + create: that would lose its disk or tree)."""
    e = d.entry
    item = Item("domain", e.kind, e.name, e.address, e.uri, e.host, 2 if e.parent else 1,
                "move", entry=e, parent=e.parent, autostart=e.spec.autostart,
                state=obs.state)
    item.move_from = src_uri
    item.move_from_host = (obs.metadata or {}).get("host", "?")
    why = ""
    if e.kind == GUEST:
        item.move_mode, why = guest_move(obs.state, src_uri, e.uri, obs.config.get("type"),
                                         owned_fields(d.xml).get("type"))
    else:
        item.move_mode = move_mode(e.kind, obs.state, src_uri, e.uri)
    explicit = {i for i, iface in enumerate(e.spec.interfaces) if iface.mac}
    item.xml = adapt_domain_xml(d.xml, obs.uuid, obs.config.get("interfaces", ()), explicit)
    item.ops = ["move"]
    if obs.autostart != e.spec.autostart:
        item.ops.append("autostart")
    parent = (obs.metadata or {}).get("parent")
    item.reason = (f"from guest {parent} ({src_uri})" if parent
                   else f"from {item.move_from_host} ({src_uri})")
    if e.kind == GUEST:
        item.reason += f", {item.move_mode} migration" + (f" ({why})" if why else "")
    return item


def build_plan(site: str, domains: list[DesiredDomain], networks: list[DesiredNetwork],
               observed: dict[str, ObservedConnection], opts: Options,
               hosts: Iterable[str] = frozenset()) -> Plan:
    """The whole plan: desired documents against what each connection reported."""
    items: list[Item] = []
    elsewhere: dict[str, list[tuple[str, ObservedDomain]]] | None = None
    for n in networks:
        conn = observed.get(n.uri)
        if conn is None or conn.error:
            item = Item("network", "network", n.name, n.name, n.uri, n.inv_host or n.host,
                        2 if n.nested else 0, "unreachable", parent=n.host if n.nested else None)
            items.append(_unreachable(item, conn))
            continue
        items.append(plan_network(n, conn.networks.get(n.name), opts, site))
    for d in domains:
        e = d.entry
        conn = observed.get(e.uri)
        if conn is None or conn.error:
            item = Item("domain", e.kind, e.name, e.address, e.uri, e.host,
                        2 if e.parent else 1, "unreachable", entry=e, parent=e.parent)
            items.append(_unreachable(item, conn))
            continue
        obs = conn.domains.get(e.name)
        if obs is None:
            if elsewhere is None:
                elsewhere = _site_domains(site, observed)
            there = [(u, o) for u, o in elsewhere.get(e.name, ()) if u != e.uri]
            if len(there) == 1 and _kind(there[0][1].config) == e.kind:
                items.append(plan_move(d, *there[0]))
                continue
        items.append(plan_domain(d, obs, site, opts))
    desired = {(d.entry.uri, d.entry.name) for d in domains}
    desired |= {(n.uri, "network:" + n.name) for n in networks}
    names = {name for _uri, name in desired}  # once, not once per connection of a fleet
    for conn in observed.values():
        if not conn.error:
            items += _orphans(site, desired, conn, opts, set(hosts), names)
    items.sort(key=lambda i: i.phase)  # stable: inventory order inside a phase
    return Plan(site, items, opts.prune, observed=observed)


def _unreachable(item: Item, conn: ObservedConnection | None) -> Item:
    if item.parent:
        # A nested container's libvirt runs inside its guest: planned once the guest is up.
        item.status = "waiting"
        item.reason = f"guest {item.parent} is not reachable yet ({item.uri})"
        item.ops = (["network-define", "network-start"] if item.target == "network"
                    else ["prepare", "define", "start"])
    else:
        item.reason = conn.error if conn and conn.error else f"{item.uri} was not read"
    return item
