"""Changes to a running domain without a restart: scheduler, memory, block I/O, CPU placement.

The persistent side is written by the redefine that precedes these calls, so every call here
affects the running domain only (the LXC driver refuses LIVE|CONFIG in one call anyway).
The LXC driver has no live cpuset API (no vcpupin/emulatorpin): virtmix writes the
container's cpuset cgroup itself, found through its libvirt_lxc process.
"""

from __future__ import annotations

from virtmix.backend.protocol import Backend
from virtmix.converge.plan import Item
from virtmix.domain import tunables
from virtmix.errors import BackendError, StateError
from virtmix.hosts import host_for
from virtmix.util.units import parse_cpuset
from virtmix.util.uris import is_local

# field -> the live API's parameter, from the rows of virtmix.domain.tunables.
SCHED_PARAMS = tunables.api_params(tunables.SCHEDULER)
MEMORY_PARAMS = tunables.api_params(tunables.MEMORY)
BLKIO_PARAMS = tunables.api_params(tunables.BLKIO)


def _lxc_cpuset(conn: Backend, item: Item, cpuset: str) -> None:
    if not is_local(conn.uri):
        raise StateError(f"{item.address}: the cpuset of a running container on {conn.uri} can "
                         "only change with a restart (libvirt has no live API for it)",
                         hint="apply --restart, or restart the container")
    pid = conn.domain_pid(item.name)
    if not pid:
        raise BackendError(f"{item.address}: no cpuset cgroup found for its process {pid}")
    host_for(conn.uri).write_cpuset(pid, parse_cpuset(cpuset))


def apply_live(conn: Backend, item: Item) -> None:
    """Set every field in item.live on the running domain."""
    live = item.live
    name = item.name
    if not conn.get(name).active:
        # libvirt 9.0's LXC driver dereferences the NULL cgroup of an inactive domain when
        # asked for scheduler parameters (virCgroupSupportsCpuBW) and libvirtd segfaults;
        # libvirt-python asks for them inside every setSchedulerParameters call.
        raise StateError(f"{item.address} stopped while being applied; apply again")
    sched = {SCHED_PARAMS[k]: v for k, v in live.items() if k in SCHED_PARAMS}
    if sched:
        conn.set_scheduler(name, sched)
    mem = {MEMORY_PARAMS[k]: v for k, v in live.items() if k in MEMORY_PARAMS}
    if mem:
        conn.set_memory_parameters(name, mem, live=True, config=False)
    blkio = {BLKIO_PARAMS[k]: v for k, v in live.items() if k in BLKIO_PARAMS}
    if blkio:
        conn.set_blkio_parameters(name, blkio, live=True, config=False)
    container = item.kind == "container"
    if "vcpu_cpuset" in live:
        if container:
            _lxc_cpuset(conn, item, live["vcpu_cpuset"])
        else:
            vcpus = item.entry.spec.vcpus if item.entry else 1
            conn.pin_vcpus(name, vcpus, parse_cpuset(live["vcpu_cpuset"]), live=True,
                           config=False)
    if container:
        return  # the LXC driver has no vcpupin/emulatorpin
    for vcpu, cpuset in live.get("cputune.vcpupin", ()):
        conn.pin_vcpu(name, vcpu, parse_cpuset(cpuset), live=True, config=False)
    if live.get("cputune.emulatorpin"):
        conn.pin_emulator(name, parse_cpuset(live["cputune.emulatorpin"]), live=True,
                          config=False)
