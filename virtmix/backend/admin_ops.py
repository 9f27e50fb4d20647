"""libvirt calls only the admin verbs need (signals, transient domains, runtime figures).

A mixin of backend.libvirt_conn.Connection, kept apart so that module stays small; the
methods are part of backend.protocol.Backend like the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import libvirt

from virtmix.backend.records import DomainRecord, RuntimeInfo
from virtmix.backend.translate import translate
from virtmix.errors import VirtmixError

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


# interfaceAddresses sources, the cheapest first: the DHCP leases of libvirt's networks,
# then the host's ARP table, then the QEMU guest agent (guests only).
_ADDR_SOURCES = ("VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE",
                 "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP",
                 "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT")


_NO_ADDR_SOURCE: dict[str, set[str]] = {}  # uri -> sources its driver does not implement


class AdminOps:
    """The admin verbs' calls; mixed into Connection, which provides what is declared here."""

    uri: str
    _conn: Any  # libvirt.virConnect (libvirt-python has no type information)

    if TYPE_CHECKING:
        def _lookup(self, name: str) -> Any: ...
        def get(self, name: str) -> DomainRecord: ...

    def runtime_info(self, name: str) -> RuntimeInfo:
        with translate(f"reading runtime figures of {name}", self.uri):
            _state, maxmem, mem, vcpus, cputime = self._lookup(name).info()
        return RuntimeInfo(int(maxmem), int(mem), int(vcpus), int(cputime))

    def autostart(self, name: str) -> bool:
        with translate(f"reading autostart of {name}", self.uri):
            return bool(self._lookup(name).autostart())

    def blkio_parameters(self, name: str, *, live: bool) -> dict[str, int]:
        flag = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with translate(f"reading block I/O parameters of {name}", self.uri):
            return dict(self._lookup(name).blkioParameters(flag))

    def send_signal(self, name: str, signal: str, pid: int = 1) -> None:
        """Send a signal to a process of a container (pid as seen inside it; 1 = its init)."""
        from virtmix.util.oplog import own_operation

        with translate(f"sending {signal} to {name}", self.uri), \
                own_operation(self.uri, name, f"signal {signal}"):
            self._lookup(name).sendProcessSignal(pid, SIGNALS[signal], 0)

    def request_shutdown(self, name: str) -> None:
        """libvirt's default shutdown: ACPI for guests; initctl, then SIGTERM for containers."""
        from virtmix.util.oplog import own_operation

        with translate(f"shutting down {name}", self.uri), own_operation(self.uri, name, "stop"):
            self._lookup(name).shutdown()

    def create_transient(self, xml: str, *, autodestroy: bool) -> DomainRecord:
        """Start a transient domain; with autodestroy libvirt removes it when this connection
        closes, so a killed virtmix leaves nothing behind."""
        flags = libvirt.VIR_DOMAIN_START_AUTODESTROY if autodestroy else 0
        with translate("starting a transient domain", self.uri):
            dom = self._conn.createXML(xml, flags)
        return self.get(str(dom.name()))

    def pin_all_vcpus(self, name: str, cpus: frozenset[int]) -> None:
        """Live: pin every vCPU and the emulator threads of a running QEMU guest to cpus."""
        with translate(f"pinning the vCPUs of {name}", self.uri):
            host_cpus = self._conn.getInfo()[2]
            cpumap = tuple(i in cpus for i in range(host_cpus))
            dom = self._lookup(name)
            for vcpu in range(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)):
                dom.pinVcpuFlags(vcpu, cpumap, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            dom.pinEmulator(cpumap, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def vcpu_pinning(self, name: str) -> list[frozenset[int]]:
        """Live CPU sets of each vCPU of a running guest."""
        with translate(f"reading the vCPU pinning of {name}", self.uri):
            maps = self._lookup(name).vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return [frozenset(i for i, on in enumerate(m) if on) for m in maps]

    def capabilities(self) -> str:
        """The host's capabilities XML (virConnectGetCapabilities), for `doctor`."""
        with translate("reading capabilities", self.uri):
            return str(self._conn.getCapabilities())

    def interface_ipv4(self, name: str) -> list[str]:
        """IPv4 addresses libvirt knows for a running domain (virDomainInterfaceAddresses);
        [] when the driver has none (libvirt 9.0's LXC driver does not implement it)."""
        try:
            dom = self._lookup(name)
        except VirtmixError:
            return []
        unsupported = _NO_ADDR_SOURCE.setdefault(self.uri, set())
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

    def network_leases(self, network: str) -> dict[str, list[str]]:
        """MAC -> IPv4 addresses of a libvirt network's current DHCP leases ({} when none)."""
        out: dict[str, list[str]] = {}
        try:
            net = self._conn.networkLookupByName(network)
            leases = net.DHCPLeases()
        except libvirt.libvirtError:
            return out
        for lease in leases or []:
            if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("mac"):
                out.setdefault(lease["mac"].lower(), []).append(lease["ipaddr"])
        return out
