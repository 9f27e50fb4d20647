"""One row per setting virtmix owns in a domain: the single description every layer reads.

A row says, for one setting: its field name in the flat model plans compare (`cputune.shares`),
where the inventory keeps it (`cpu: {shares: ...}`), the classic cgroup keys that set it
(`cpu.shares` on v1, `cpu.weight` on v2, with their conversions), its XML path
(`cputune/shares`), the libvirt API and parameter that change it on a running domain
(setSchedulerParametersFlags `cpu_shares`), the value a removed setting returns to on
cgroup v1 and on v2, and how a change reaches a running container or guest (live, at the next
start, or only by recreating the domain).

Derived from these rows, and nowhere else: plan's FIELD_MODES and removal defaults
(virtmix.converge.plan), the live API parameters (virtmix.converge.live), the accepted cgroup
keys (virtmix.inventory.cgroups), explain's element strings (virtmix.render.explain) and the
`cgroup` verb (virtmix.admin.cgroup_verbs).

Pure data and pure functions, importing only virtmix.util: the inventory layer imports this
module without importing anything above itself.

Conversions between cgroup v1 and v2 units use systemd's proportional formulas, which keep the
defaults aligned (cpu.shares 1024 == cpu.weight 100, blkio.weight 500 == io.weight 100):
    cpu.weight   = shares * 100 / 1024     (clamped to 1..10000)
    cpu.shares   = weight * 1024 / 100     (clamped to 2..262144)
    blkio.weight = io.weight * 500 / 100   (clamped to 10..1000)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from virtmix.util.units import normalize_cpuset, parse_size

LIVE, RESTART, RECREATE = "live", "restart", "recreate"
CONTAINER, GUEST = "container", "guest"

SHARES_MIN, SHARES_MAX, SHARES_DEFAULT = 2, 262144, 1024
WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10000, 100
BLKIO_MIN, BLKIO_MAX = 10, 1000
PERIOD_MIN, PERIOD_MAX, PERIOD_DEFAULT = 1000, 1000000, 100000
# virDomainSetMemoryParameters' "no limit" (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, in KiB);
# libvirt-python does not export the constant.
UNLIMITED_KIB = 9007199254740991

# The live APIs, by the Backend method that calls them.
SCHEDULER = "scheduler"  # virDomainSetSchedulerParametersFlags
MEMORY = "memory"        # virDomainSetMemoryParameters
BLKIO = "blkio"          # virDomainSetBlkioParameters


# -- unit conversions -------------------------------------------------------------------------
def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares -> cgroup v2 cpu.weight (systemd's formula)."""
    return _clamp(round(shares * WEIGHT_DEFAULT / SHARES_DEFAULT), WEIGHT_MIN, WEIGHT_MAX)


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight -> cgroup v1 cpu.shares (inverse of shares_to_weight)."""
    return _clamp(round(weight * SHARES_DEFAULT / WEIGHT_DEFAULT), SHARES_MIN, SHARES_MAX)


def io_weight_to_blkio(weight: int) -> int:
    """cgroup v2 io.weight -> cgroup v1 blkio.weight (systemd's formula)."""
    return _clamp(round(weight * 500 / 100), BLKIO_MIN, BLKIO_MAX)


def blkio_to_io_weight(weight: int) -> int:
    """cgroup v1 blkio.weight -> cgroup v2 io.weight (inverse of io_weight_to_blkio)."""
    return round(weight * 100 / 500)


# -- value parsers of the classic keys ---------------------------------------------------------
def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def ranged(lo: int, hi: int) -> Callable[[Any], int]:
    """A parser of an integer between lo and hi."""
    def conv(value: Any) -> int:
        n = _int(value)
        if not lo <= n <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {n}")
        return n

    return conv


def _quota(value: Any) -> int:
    n = _int(value)
    if n != -1 and n < 1000:
        raise ValueError(f"must be -1 (no limit) or at least 1000 microseconds, got {n}")
    return n


def _limit_bytes(value: Any) -> int | None:
    """A memory limit in bytes or a size string; -1/"max" means no limit (None)."""
    text = str(value).strip()
    if text in ("-1", "max"):
        return None
    return parse_size(int(text) if text.isdigit() else value)


def _cpu_max(value: Any) -> dict[str, int]:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD", "max PERIOD" or "max"."""
    parts = str(value).split()
    if not parts or len(parts) > 2:
        raise ValueError(f"expected 'QUOTA PERIOD' or 'max [PERIOD]', got {value!r}")
    out = {"quota": -1 if parts[0] == "max" else _quota(parts[0])}
    if len(parts) == 2:
        out["period"] = ranged(PERIOD_MIN, PERIOD_MAX)(parts[1])
    return out


def _weight_as_shares(value: Any) -> int:
    return weight_to_shares(ranged(WEIGHT_MIN, WEIGHT_MAX)(value))


def _io_weight_as_blkio(value: Any) -> int:
    return io_weight_to_blkio(ranged(WEIGHT_MIN, WEIGHT_MAX)(value))


# -- the rows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CgroupName:
    """A classic cgroup key that sets a row (`cpu.weight`), and how its value converts.

    `whole` keys set several fields of their section at once (cpu.max: quota and period):
    their parser returns {field: value}.
    """

    name: str
    convert: Callable[[Any], Any]
    meaning: str
    whole: bool = False
    show: Callable[[int], int] = int  # the inventory's value in this key's unit


@dataclass(frozen=True)
class Tunable:
    """One setting of a domain. See the module docstring for what reads each column."""

    field: str                      # the flat model's name, libvirt's vocabulary
    xml: str                        # path in the domain document ("@attr" for an attribute)
    modes: Mapping[str, str]        # container/guest -> live | restart | recreate
    section: str = ""               # the inventory entry's section ("cpu", "memtune", ...)
    key: str = ""                   # the key inside it ("shares")
    cgroup_v1: str = ""             # where the kernel keeps it, for people (explain)
    cgroup_v2: str = ""
    unit: str = ""                  # unit in the XML and the live API
    keys: tuple[CgroupName, ...] = ()  # classic keys accepted in `cgroup:` and by the verb
    api: str = ""                   # SCHEDULER | MEMORY | BLKIO ("" = no plain parameter API)
    param: str = ""                 # the API's parameter name
    removed_v1: int | None = None   # what a running domain returns to when the setting goes
    removed_v2: int | None = None   # (None: left as it is)
    v2_weight: bool = False         # libvirt writes the value verbatim to a v2 weight file
    kinds: tuple[str, ...] = (CONTAINER, GUEST)  # where the setting exists at all
    note: str = ""
    cgroup_live: bool = False       # live only where a kernel cgroup backs it (real LXC)
    fallback: Mapping[str, str] = dc_field(default_factory=dict)  # kind -> the field a removed
    #                                 setting returns to (a container's hard limit: memory)

    def mode(self, kind: str, cgroups: bool = True) -> str:
        """How a change reaches a running domain of this kind. cgroups: its limits are
        kernel cgroups (libvirt's LXC driver; not e.g. the test driver)."""
        mode = self.modes.get(kind, RESTART)
        return RESTART if mode == LIVE and self.cgroup_live and not cgroups else mode

    @property
    def element(self) -> str:
        """The XML element as people write it: `<cputune><shares>`, `<vcpu cpuset=...>`."""
        parts = self.xml.split("/")
        if parts[-1].startswith("@"):
            attr = parts.pop()[1:]
            parts = parts or ["domain"]
            return "".join(f"<{p}>" for p in parts[:-1]) + f"<{parts[-1]} {attr}=...>"
        return "".join(f"<{p}>" for p in parts)

    def removed(self, v2: bool) -> int | None:
        return self.removed_v2 if v2 else self.removed_v1


def _modes(container: str, guest: str | None = None) -> dict[str, str]:
    return {CONTAINER: container, GUEST: container if guest is None else guest}


def _rows() -> tuple[Tunable, ...]:
    live, restart, recreate = _modes(LIVE), _modes(RESTART), _modes(RECREATE)
    limit = "hard memory limit"
    return (
        Tunable("type", "@type", restart),
        Tunable("description", "description", live),
        Tunable("metadata", "metadata", live),
        # A container's `memory:` is its memory cgroup limit, which the kernel changes live;
        # a guest's is its RAM, fixed until the next start.
        Tunable("memory_kib", "memory", _modes(LIVE, RESTART), "", "memory",
                "memory.limit_in_bytes", "memory.max", "KiB", cgroup_live=True,
                note="applied live through the hard limit (the same cgroup file)"),
        Tunable("vcpus", "vcpu", restart, "", "vcpus"),
        Tunable("vcpu_cpuset", "vcpu/@cpuset", live, "cpu", "cpuset",
                "cpuset.cpus", "cpuset.cpus", "cpuset",
                (CgroupName("cpuset.cpus", normalize_cpuset, "CPUs the domain may run on"),)),
        Tunable("cputune.shares", "cputune/shares", live, "cpu", "shares",
                "cpu.shares", "cpu.weight", "shares (v1) / weight (v2)",
                (CgroupName("cpu.shares", ranged(SHARES_MIN, SHARES_MAX),
                            "relative CPU weight (cgroup v1, default 1024)"),
                 CgroupName("cpu.weight", _weight_as_shares,
                            "relative CPU weight (cgroup v2, default 100), stored as shares",
                            show=shares_to_weight)),
                SCHEDULER, "cpu_shares", SHARES_DEFAULT, WEIGHT_DEFAULT, v2_weight=True),
        Tunable("cputune.period", "cputune/period", live, "cpu", "period",
                "cpu.cfs_period_us", "second field of cpu.max", "us",
                (CgroupName("cpu.cfs_period_us", ranged(PERIOD_MIN, PERIOD_MAX),
                            "CFS period, us"),),
                SCHEDULER, "vcpu_period", PERIOD_DEFAULT, PERIOD_DEFAULT),
        Tunable("cputune.quota", "cputune/quota", live, "cpu", "quota",
                "cpu.cfs_quota_us", "first field of cpu.max", "us; -1 = no limit",
                (CgroupName("cpu.cfs_quota_us", _quota, "CPU time per period, us"),
                 CgroupName("cpu.max", _cpu_max, "cgroup v2 quota and period", whole=True)),
                SCHEDULER, "vcpu_quota", -1, -1),
        Tunable("cputune.vcpupin", "cputune/vcpupin", live, "cpu", "vcpupin",
                kinds=(GUEST,), note="virDomainPinVcpuFlags"),
        Tunable("cputune.emulatorpin", "cputune/emulatorpin", live, "cpu", "emulatorpin",
                kinds=(GUEST,), note="virDomainPinEmulator"),
        # The memory cgroup limit of a container is one file that both <memory> and
        # <memtune><hard_limit> write: a removed hard limit goes back to what `memory:`
        # means (see removed_value), not to "unlimited".
        Tunable("memtune.hard_limit", "memtune/hard_limit", live, "memtune", "hard_limit",
                "memory.limit_in_bytes", "memory.max", "KiB",
                (CgroupName("memory.limit_in_bytes", _limit_bytes, limit),
                 CgroupName("memory.max", _limit_bytes, limit + " (cgroup v2)")),
                MEMORY, "hard_limit", UNLIMITED_KIB, UNLIMITED_KIB,
                fallback={CONTAINER: "memory_kib"}),
        Tunable("memtune.soft_limit", "memtune/soft_limit", live, "memtune", "soft_limit",
                "memory.soft_limit_in_bytes", "memory.high", "KiB",
                (CgroupName("memory.soft_limit_in_bytes", _limit_bytes,
                            "soft memory limit (reclaimed first under pressure)"),
                 CgroupName("memory.high", _limit_bytes,
                            "memory throttling threshold (cgroup v2)")),
                MEMORY, "soft_limit", UNLIMITED_KIB, UNLIMITED_KIB),
        Tunable("memtune.swap_hard_limit", "memtune/swap_hard_limit", live, "memtune",
                "swap_hard_limit", "memory.memsw.limit_in_bytes (memory + swap)",
                "memory.swap.max", "KiB",
                (CgroupName("memory.memsw.limit_in_bytes", _limit_bytes,
                            "memory plus swap limit"),),
                MEMORY, "swap_hard_limit", UNLIMITED_KIB, UNLIMITED_KIB),
        Tunable("memtune.min_guarantee", "memtune/min_guarantee", restart, "memtune",
                "min_guarantee", "no cgroup equivalent", "no cgroup equivalent", "KiB"),
        # Removing a block I/O weight leaves the running value alone (as before): libvirt's
        # accepted range differs between drivers and cgroup versions.
        Tunable("blkio.weight", "blkiotune/weight", live, "blkio", "weight",
                "blkio.weight", "io.weight", "weight",
                (CgroupName("blkio.weight", ranged(BLKIO_MIN, BLKIO_MAX),
                            "relative block I/O weight (cgroup v1, 10..1000)"),
                 CgroupName("io.weight", _io_weight_as_blkio,
                            "relative block I/O weight (cgroup v2, 1..10000), stored as "
                            "blkio weight", show=blkio_to_io_weight)),
                BLKIO, "weight"),
        Tunable("interfaces", "devices/interface", restart),
        Tunable("os.init", "os/init", restart, kinds=(CONTAINER,)),
        Tunable("os.initargs", "os/initarg", restart, kinds=(CONTAINER,)),
        Tunable("privnet", "features/privnet", restart, kinds=(CONTAINER,)),
        Tunable("filesystems", "devices/filesystem", restart, kinds=(CONTAINER,)),
        # A running container's user namespace cannot change, and its tree's ownership
        # follows the map: only a new domain (over a re-shifted tree) takes another idmap.
        Tunable("idmap", "idmap", recreate, kinds=(CONTAINER,)),
        Tunable("os.arch", "os/type/@arch", restart, kinds=(GUEST,)),
        Tunable("os.machine", "os/type/@machine", restart, kinds=(GUEST,)),
        Tunable("os.kernel", "os/kernel", restart, kinds=(GUEST,)),
        Tunable("os.initrd", "os/initrd", restart, kinds=(GUEST,)),
        Tunable("os.cmdline", "os/cmdline", restart, kinds=(GUEST,)),
        Tunable("disks", "devices/disk", restart, kinds=(GUEST,)),
        Tunable("serial_log", "devices/serial/log/@file", restart, kinds=(GUEST,)),
    )


TUNABLES: tuple[Tunable, ...] = _rows()
BY_FIELD: dict[str, Tunable] = {t.field: t for t in TUNABLES}
BY_INVENTORY: dict[tuple[str, str], Tunable] = {(t.section, t.key): t for t in TUNABLES
                                               if t.key}
# Fields that only live in the definition: nothing to do to the running domain.
CONFIG_ONLY = frozenset({"description", "metadata"})


def field_modes(kind: str = GUEST) -> dict[str, str]:
    """field -> mode for one kind of domain, in the table's (the plan's diff) order."""
    return {t.field: t.mode(kind) for t in TUNABLES}


def live_fields(kind: str, cgroups: bool = True) -> frozenset[str]:
    """Fields a change of which is applied to the running domain of that kind."""
    return frozenset(t.field for t in TUNABLES
                     if t.mode(kind, cgroups) == LIVE and kind in t.kinds) - CONFIG_ONLY


def api_params(api: str) -> dict[str, str]:
    """field -> the parameter name of one live API (SCHEDULER, MEMORY, BLKIO)."""
    return {t.field: t.param for t in TUNABLES if t.api == api}


def removed_value(name: str, kind: str, v2: bool,
                  want: Mapping[str, Any] | None = None) -> int | None:
    """What a running domain's setting returns to when the inventory drops it.

    cpu shares go back to the kernel's default: 1024 on cgroup v1, but weight 100 on v2,
    where libvirt writes <shares> verbatim to cpu.weight (1024 there would be ten times the
    default). A container's hard memory limit goes back to its `memory:`, which is the same
    cgroup file; a guest's to unlimited (its `memory:` is RAM, not a limit). `want` holds
    the domain's other wanted fields (the fallback's value).
    """
    row = BY_FIELD.get(name)
    if row is None:
        return None
    other = row.fallback.get(kind)
    if other and want and want.get(other) is not None:
        return int(want[other])
    return row.removed(v2)


def to_libvirt(name: str, value: int, v2: bool) -> int:
    """An inventory value as libvirt takes it where the domain runs (shares -> v2 weight)."""
    row = BY_FIELD[name]
    return shares_to_weight(value) if row.v2_weight and v2 else value


def from_libvirt(name: str, value: int, v2: bool) -> int:
    """A value libvirt reports, in the inventory's unit (a v2 weight -> shares)."""
    row = BY_FIELD[name]
    return weight_to_shares(value) if row.v2_weight and v2 else value


@dataclass(frozen=True)
class CgroupKey:
    """One accepted cgroup key: where it lands in the entry and how its value converts."""

    name: str
    section: str  # "cpu", "memtune" or "blkio" in the inventory entry
    field: str    # the inventory key in that section, or "*" for a whole-section key
    convert: Callable[[Any], Any]
    meaning: str
    tunable: str = ""  # the row's field (cputune.shares)
    show: Callable[[int], int] = int  # an inventory value in this key's unit


def cgroup_keys() -> dict[str, CgroupKey]:
    """Every classic key the inventory's `cgroup:` and the `cgroup` verb accept."""
    out: dict[str, CgroupKey] = {}
    for t in TUNABLES:
        for k in t.keys:
            out[k.name] = CgroupKey(k.name, t.section, "*" if k.whole else t.key, k.convert,
                                    k.meaning, t.field, k.show)
    return out
