"""libvirt calls only the admin verbs need (signals, transient domains, runtime figures)."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from virtmix.backend.libvirt_conn import Connection, _translate
from virtmix.backend.records import DomainRecord
from virtmix.errors import VirtmixError

# virDomainSetMemoryParameters' "no limit" (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, in KiB);
# libvirt-python does not export the constant.
MEMORY_UNLIMITED_KIB = 9007199254740991

# libvirt's portable signal numbers (virDomainProcessSignal) for the names admins use.
SIGNALS = {
    "SIGTERM": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_TERM,
    "SIGKILL": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_KILL,
    "SIGPWR": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_PWR,
    "SIGINT": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_INT,
    "SIGHUP": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_HUP,
    "SIGUSR1": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_USR1,
    "SIGUSR2": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_USR2,
    # systemd's "poweroff" request (SIGRTMIN+4).
    "SIGRTMIN+4": libvirt.VIR_DOMAIN_PROCESS_SIGNAL_RT4,
}


@dataclass(frozen=True)
class RuntimeInfo:
    """virDomainGetInfo: memory in use and CPU time, for `info`."""

    max_memory_kib: int
    memory_kib: int
    vcpus: int
    cpu_time_ns: int


def _dom(conn: Connection, name: str) -> libvirt.virDomain:
    return conn._lookup(name)  # noqa: SLF001 - same package; raises NotFoundError


def runtime_info(conn: Connection, name: str) -> RuntimeInfo:
    with _translate(f"reading runtime figures of {name}", conn.uri):
        _state, maxmem, mem, vcpus, cputime = _dom(conn, name).info()
    return RuntimeInfo(maxmem, mem, vcpus, cputime)


def autostart(conn: Connection, name: str) -> bool:
    with _translate(f"reading autostart of {name}", conn.uri):
        return bool(_dom(conn, name).autostart())


def blkio_parameters(conn: Connection, name: str, *, live: bool) -> dict[str, int]:
    flag = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    with _translate(f"reading block I/O parameters of {name}", conn.uri):
        return _dom(conn, name).blkioParameters(flag)


def send_signal(conn: Connection, name: str, signal: str, pid: int = 1) -> None:
    """Send a signal to a process of a container (pid as seen inside it; 1 = its init)."""
    with _translate(f"sending {signal} to {name}", conn.uri):
        _dom(conn, name).sendProcessSignal(pid, SIGNALS[signal], 0)


def request_shutdown(conn: Connection, name: str) -> None:
    """libvirt's default shutdown: ACPI for guests; initctl, then SIGTERM for containers."""
    with _translate(f"shutting down {name}", conn.uri):
        _dom(conn, name).shutdown()


def create_transient(conn: Connection, xml: str, *, autodestroy: bool) -> DomainRecord:
    """Start a transient domain; with autodestroy libvirt removes it when this connection
    closes, so a killed virtmix leaves nothing behind."""
    flags = libvirt.VIR_DOMAIN_START_AUTODESTROY if autodestroy else 0
    with _translate("starting a transient domain", conn.uri):
        dom = conn.raw.createXML(xml, flags)
    return conn.get(dom.name())


def pin_all_vcpus(conn: Connection, name: str, cpus: frozenset[int]) -> None:
    """Live: pin every vCPU and the emulator threads of a running QEMU guest to cpus."""
    with _translate(f"pinning the vCPUs of {name}", conn.uri):
        host_cpus = conn.raw.getInfo()[2]
        cpumap = tuple(i in cpus for i in range(host_cpus))
        dom = _dom(conn, name)
        for vcpu in range(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)):
            dom.pinVcpuFlags(vcpu, cpumap, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        dom.pinEmulator(cpumap, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def vcpu_pinning(conn: Connection, name: str) -> list[frozenset[int]]:
    """Live CPU sets of each vCPU of a running guest."""
    with _translate(f"reading the vCPU pinning of {name}", conn.uri):
        maps = _dom(conn, name).vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return [frozenset(i for i, on in enumerate(m) if on) for m in maps]


# interfaceAddresses sources, the cheapest first: the DHCP leases of libvirt's networks,
# then the host's ARP table, then the QEMU guest agent (guests only).
_ADDR_SOURCES = ("VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE",
                 "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP",
                 "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT")


_NO_ADDR_SOURCE: dict[str, set[str]] = {}  # uri -> sources its driver does not implement


def interface_ipv4(conn: Connection, name: str) -> list[str]:
    """IPv4 addresses libvirt knows for a running domain (virDomainInterfaceAddresses);
    [] when the driver has none (libvirt 9.0's LXC driver does not implement it)."""
    try:
        dom = _dom(conn, name)
    except VirtmixError:
        return []
    unsupported = _NO_ADDR_SOURCE.setdefault(conn.uri, set())
    for source in _ADDR_SOURCES:
        flag = getattr(libvirt, source, None)
        if flag is None or source in unsupported:
            continue
        try:
            ifaces = dom.interfaceAddresses(flag)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                unsupported.add(source)  # the driver lacks it: do not ask per domain (ls)
            continue
        found = [a["addr"] for i in (ifaces or {}).values() for a in (i.get("addrs") or [])
                 if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and
                 not a["addr"].startswith("127.")]
        if found:
            return list(dict.fromkeys(found))
    return []


def network_leases(conn: Connection, network: str) -> dict[str, list[str]]:
    """MAC -> IPv4 addresses of a libvirt network's current DHCP leases ({} when none)."""
    out: dict[str, list[str]] = {}
    try:
        net = conn.raw.networkLookupByName(network)
        leases = net.DHCPLeases()
    except libvirt.libvirtError:
        return out
    for lease in leases or []:
        if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("mac"):
            out.setdefault(lease["mac"].lower(), []).append(lease["ipaddr"])
    return out
