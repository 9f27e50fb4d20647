"""`virtmix cgroup NAME KEY [VALUE]`: read or set one cgroup setting, live and persistent.

Keys are the inventory's (virtmix.inventory.cgroups: cpu.shares, cpuset.cpus, memory.limit_in_bytes,
cpu.weight, memory.max, ...). Values go through libvirt (schedinfo, memtune, blkiotune), so
virsh and the persistent definition agree; the exception is a running container's cpuset,
which libvirt cannot change live: virtmix writes the container's cpuset cgroup and puts the
same set into the definition's <vcpu cpuset>.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from virtmix.admin.targets import Target
from virtmix.domain import cputune, tunables
from virtmix.domain.settings import parse_domain
from virtmix.domain.tunables import UNLIMITED_KIB
from virtmix.errors import UsageError
from virtmix.hosts import host_for, is_local, is_ssh_uri, shares_are_weights
from virtmix.inventory import cgroups
from virtmix.util.units import format_cpuset, parse_cpuset

# inventory key -> the scheduler API's parameter (cpu_shares, vcpu_period, vcpu_quota).
SCHED = {t.key: t.param for t in tunables.TUNABLES if t.api == tunables.SCHEDULER}
UNSET = "default"


def key_spec(key: str) -> cgroups.CgroupKey:
    """The key's definition; unknown keys are a usage error (exit 2) with a did-you-mean."""
    try:
        return cgroups.lookup(key)
    except cgroups.CgroupKeyError as exc:
        raise UsageError(str(exc), hint="keys: " + ", ".join(cgroups.CGROUP_KEYS)) from None


def _v2(target: Target) -> bool:
    return shares_are_weights(target.place.uri, target.place.parent)


@dataclass
class CgroupValue:
    name: str
    key: str
    live: str | None  # None: the domain is not running
    persistent: str | None  # None: a transient domain

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "key": self.key, "live": self.live,
                "persistent": self.persistent}


# -- reading --------------------------------------------------------------------------------
def _cpuset(target: Target, live: bool) -> str:
    rec = target.record
    uri = target.place.uri
    if live and rec.kind == "lxc" and (is_local(uri) or is_ssh_uri(uri)) and rec.id:
        return host_for(uri).read_cpuset(rec.id) or ""  # ssh: e.g. nested in a guest
    if live and rec.kind == "kvm":
        pins = target.conn.vcpu_pinning(rec.name)
        return format_cpuset(frozenset().union(*pins)) if pins else UNSET
    xml = target.conn.live_xml(rec.name) if live else rec.xml
    return parse_domain(xml).vcpu_cpuset or UNSET


def _fields(target: Target, spec: cgroups.CgroupKey, live: bool) -> dict[str, int]:
    conn, name = target.conn, target.record.name
    if spec.section == "cpu":
        if not live:
            # libvirt 9.0's LXC driver crashes (libvirtd segfaults) on scheduler calls with
            # AFFECT_CONFIG for an inactive domain: the definition is read instead.
            tune = parse_domain(conn.get(name).xml).cputune
            return {f: tune.get(f, 0) for f in SCHED}
        sched = conn.scheduler(name)
        return {f: sched.get(p, 0) for f, p in SCHED.items()}
    if spec.section == "memtune":
        return dict(conn.memory_parameters(name, live=live))
    return {"weight": conn.blkio_parameters(name, live=live).get("weight", 0)}


def _bytes(kib: int | None) -> str:
    if not kib or kib >= UNLIMITED_KIB:
        return "max"
    return str(kib * 1024)


def _format(spec: cgroups.CgroupKey, f: dict[str, int], v2: bool) -> str:
    if spec.section == "memtune":
        return _bytes(f.get(spec.field))
    if spec.field == "*":  # cpu.max: "QUOTA PERIOD"
        quota = f["quota"]
        period = f["period"] or tunables.PERIOD_DEFAULT
        return f"{quota if quota and quota > 0 else 'max'} {period}"
    raw = f[spec.field]
    if not raw:
        return UNSET
    # libvirt's value -> the inventory's unit (a v2 weight -> shares) -> the key's own unit.
    return str(spec.show(tunables.from_libvirt(spec.tunable, raw, v2)))


def read_value(target: Target, key: str) -> CgroupValue:
    spec = key_spec(key)
    rec = target.record

    def one(live: bool) -> str:
        if spec.field == "cpuset":
            return _cpuset(target, live)
        return _format(spec, _fields(target, spec, live), _v2(target))

    return CgroupValue(rec.name, spec.name, one(True) if rec.active else None,
                       one(False) if rec.persistent else None)


def read_all(target: Target) -> list[CgroupValue]:
    """Every key the verb knows, with its live and persistent value (`cgroup NAME`).

    Each libvirt section (scheduler, memtune, blkiotune, cpuset) is read once per live /
    persistent side, not once per key: the v1 and v2 names of a setting share it."""
    rec = target.record
    v2 = _v2(target)
    cache: dict[tuple[str, bool], object] = {}

    def one(spec: cgroups.CgroupKey, live: bool) -> str:
        section = "cpuset" if spec.field == "cpuset" else spec.section
        if (section, live) not in cache:
            cache[(section, live)] = (_cpuset(target, live) if section == "cpuset"
                                      else _fields(target, spec, live))
        got = cache[(section, live)]
        return got if isinstance(got, str) else _format(spec, got, v2)

    out = []
    for key in cgroups.CGROUP_KEYS:
        spec = key_spec(key)
        out.append(CgroupValue(rec.name, spec.name, one(spec, True) if rec.active else None,
                               one(spec, False) if rec.persistent else None))
    return out


# -- writing --------------------------------------------------------------------------------
def _params(spec: cgroups.CgroupKey, value: str, v2: bool) -> tuple[str, dict[str, int]]:
    """('sched'|'memory'|'blkio', libvirt parameters) for a converted key value."""
    try:
        converted = spec.convert(value)
    except ValueError as exc:
        raise UsageError(f"{spec.name}: {exc}") from None
    fields = converted if spec.field == "*" else {spec.field: converted}
    if spec.section == "cpu":
        if "shares" in fields:
            fields["shares"] = tunables.to_libvirt("cputune.shares", fields["shares"], v2)
        return "sched", {SCHED[k]: v for k, v in fields.items()}
    if spec.section == "memtune":
        return "memory", {k: UNLIMITED_KIB if v is None else -(-v // 1024)
                          for k, v in fields.items()}
    return "blkio", {"weight": fields["weight"]}


def _redefine(target: Target, edit: Callable[[etree._Element], None]) -> None:
    """Edit the persistent definition and define it again (UUID and the rest kept)."""
    tree = etree.fromstring(target.conn.get(target.name).xml.encode())
    edit(tree)
    target.conn.define(etree.tostring(tree, encoding="unicode"))


def _set_persistent_cpuset(target: Target, cpuset: str) -> None:
    _redefine(target, lambda tree: cputune.set_cpuset(tree, cpuset))


def _set_persistent_cputune(target: Target, fields: dict[str, int]) -> None:
    """<cputune> values in the definition; the scheduler API's AFFECT_CONFIG is avoided
    (it crashes libvirt 9.0's LXC driver for inactive domains)."""
    _redefine(target, lambda tree: cputune.set_sched(tree, fields))


def _set_cpuset(target: Target, value: str) -> None:
    try:
        cpus = parse_cpuset(value)
    except ValueError as exc:
        raise UsageError(f"cpuset.cpus: {exc}") from None
    rec = target.record
    if rec.active:
        if rec.kind == "kvm":
            target.conn.pin_all_vcpus(rec.name, cpus)
        elif (is_local(target.place.uri) or is_ssh_uri(target.place.uri)) and rec.id:
            host_for(target.place.uri).write_cpuset(rec.id, cpus)
        else:
            raise UsageError(f"{target.address}: a running container's cpuset can only be "
                             "changed live on its own host (libvirt has no API for it)",
                             hint="run virtmix there, or change it while the container is "
                                  "stopped")
    if rec.persistent:
        _set_persistent_cpuset(target, format_cpuset(cpus))


def set_value(target: Target, key: str, value: str) -> CgroupValue:
    """Set KEY to VALUE on the running domain and in its persistent definition."""
    spec = key_spec(key)
    rec = target.record
    if spec.field == "cpuset":
        _set_cpuset(target, value)
    else:
        kind, params = _params(spec, value, _v2(target))
        live, config = rec.active, rec.persistent
        if kind == "sched":
            if live:
                target.conn.set_scheduler(rec.name, params)
            if config:
                by_field = {f: params[p] for f, p in SCHED.items() if p in params}
                _set_persistent_cputune(target, by_field)
        elif kind == "memory":
            target.conn.set_memory_parameters(rec.name, params, live=live, config=config)
        else:
            target.conn.set_blkio_parameters(rec.name, params, live=live, config=config)
    target.refresh()
    return read_value(target, key)
