"""libvirt calls only the admin verbs need (signals, transient domains, runtime figures)."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from virtmix.backend.libvirt_conn import Connection, _translate
from virtmix.backend.records import DomainRecord

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
    from virtmix.util.oplog import own_operation

    with _translate(f"sending {signal} to {name}", conn.uri), \
            own_operation(conn.uri, name, f"signal {signal}"):
        _dom(conn, name).sendProcessSignal(pid, SIGNALS[signal], 0)


def request_shutdown(conn: Connection, name: str) -> None:
    """libvirt's default shutdown: ACPI for guests; initctl, then SIGTERM for containers."""
    from virtmix.util.oplog import own_operation

    with _translate(f"shutting down {name}", conn.uri), own_operation(conn.uri, name, "stop"):
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
