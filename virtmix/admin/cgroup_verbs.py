"""`virtmix cgroup NAME KEY [VALUE]`: read or set one cgroup setting, live and persistent.

Keys are the inventory's (virtmix.inventory.cgroups: cpu.shares, cpuset.cpus, memory.limit_in_bytes,
cpu.weight, memory.max, ...). Values go through libvirt (schedinfo, memtune, blkiotune), so
virsh and the persistent definition agree; the exception is a running container's cpuset,
which libvirt cannot change live: virtmix writes the container's cpuset cgroup and puts the
same set into the definition's <vcpu cpuset>.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from virtmix.admin.domxml import parse_domain
from virtmix.admin.targets import Target
from virtmix.backend.admin_ops import (
    MEMORY_UNLIMITED_KIB,
    blkio_parameters,
    pin_all_vcpus,
    vcpu_pinning,
)
from virtmix.errors import UsageError
from virtmix.hosts import cgroupfs
from virtmix.hosts.local import is_local
from virtmix.inventory import cgroups
from virtmix.nesting import ops as nesting_ops
from virtmix.nesting.ops import is_ssh_uri
from virtmix.util.units import format_cpuset, parse_cpuset

SCHED = {"shares": "cpu_shares", "quota": "vcpu_quota", "period": "vcpu_period"}
UNSET = "default"


def key_spec(key: str) -> cgroups.CgroupKey:
    """The key's definition; unknown keys are a usage error (exit 2) with a did-you-mean."""
    try:
        return cgroups.lookup(key)
    except cgroups.CgroupKeyError as exc:
        raise UsageError(str(exc), hint="keys: " + ", ".join(cgroups.CGROUP_KEYS)) from None


def _v2(target: Target) -> bool:
    return cgroupfs.shares_are_weights(target.place.uri, target.place.parent)


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
    if live and rec.kind == "lxc" and is_local(target.place.uri) and rec.id:
        return cgroupfs.read_cpuset(rec.id)
    if live and rec.kind == "lxc" and is_ssh_uri(target.place.uri) and rec.id:
        return nesting_ops.read_cpuset(target.place.uri, rec.id)  # e.g. nested in a guest
    if live and rec.kind == "kvm":
        pins = vcpu_pinning(target.conn, rec.name)
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
    return {"weight": blkio_parameters(conn, name, live=live).get("weight", 0)}


def _bytes(kib: int | None) -> str:
    if not kib or kib >= MEMORY_UNLIMITED_KIB:
        return "max"
    return str(kib * 1024)


def _format(spec: cgroups.CgroupKey, f: dict[str, int], v2: bool) -> str:
    name = spec.name
    if spec.section == "memtune":
        return _bytes(f.get(spec.field))
    if spec.section == "blkio":
        w = f["weight"]
        return str(round(w * 100 / 500)) if w and name == "io.weight" else str(w or UNSET)
    if name in ("cpu.shares", "cpu.weight"):
        raw = f["shares"]
        if not raw:
            return UNSET
        shares = cgroups.weight_to_shares(raw) if v2 else raw
        return str(cgroups.shares_to_weight(shares) if name == "cpu.weight" else shares)
    if name == "cpu.max":
        quota = f["quota"]
        return f"{quota if quota and quota > 0 else 'max'} {f['period'] or 100000}"
    value = f[spec.field]
    return str(value) if value else UNSET


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
        if "shares" in fields and v2:
            fields["shares"] = cgroups.shares_to_weight(fields["shares"])
        return "sched", {SCHED[k]: v for k, v in fields.items()}
    if spec.section == "memtune":
        return "memory", {k: MEMORY_UNLIMITED_KIB if v is None else -(-v // 1024)
                          for k, v in fields.items()}
    return "blkio", {"weight": fields["weight"]}


def _redefine(target: Target, edit) -> None:
    """Edit the persistent definition and define it again (UUID and the rest kept)."""
    tree = etree.fromstring(target.conn.get(target.name).xml.encode())
    edit(tree)
    target.conn.define(etree.tostring(tree, encoding="unicode"))


def _set_persistent_cpuset(target: Target, cpuset: str) -> None:
    def edit(tree: etree._Element) -> None:
        vcpu = tree.find("vcpu")
        if vcpu is None:
            vcpu = etree.SubElement(tree, "vcpu")
            vcpu.text = "1"
        vcpu.set("cpuset", cpuset)

    _redefine(target, edit)


def _set_persistent_cputune(target: Target, fields: dict[str, int]) -> None:
    """<cputune> values in the definition; the scheduler API's AFFECT_CONFIG is avoided
    (it crashes libvirt 9.0's LXC driver for inactive domains)."""
    def edit(tree: etree._Element) -> None:
        tune = tree.find("cputune")
        if tune is None:
            tune = etree.Element("cputune")
            vcpu = tree.find("vcpu")
            (vcpu.addnext(tune) if vcpu is not None else tree.append(tune))
        for key in ("shares", "period", "quota"):
            if key in fields:
                node = tune.find(key)
                if node is None:
                    node = etree.SubElement(tune, key)
                node.text = str(fields[key])
        # libvirt's schema wants <cputune> children in order: shares, period, quota, ...
        order = {"shares": 0, "period": 1, "quota": 2}
        kids = sorted(tune, key=lambda n: order.get(n.tag, 3))
        tune[:] = kids

    _redefine(target, edit)


def _set_cpuset(target: Target, value: str) -> None:
    try:
        cpus = parse_cpuset(value)
    except ValueError as exc:
        raise UsageError(f"cpuset.cpus: {exc}") from None
    rec = target.record
    if rec.active:
        if rec.kind == "kvm":
            pin_all_vcpus(target.conn, rec.name, cpus)
        elif is_local(target.place.uri) and rec.id:
            cgroupfs.write_cpuset(rec.id, cpus)
        elif is_ssh_uri(target.place.uri) and rec.id:
            nesting_ops.write_cpuset(target.place.uri, rec.id, format_cpuset(cpus))
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
