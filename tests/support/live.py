"""Live-daemon test helpers: polling, cleanup by name prefix, running commands in containers."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import libvirt

from virtmix.util import shared_cgroups

T = TypeVar("T")
LXC_STATE_DIR = Path("/run/libvirt/lxc")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll predicate until it returns a truthy value and return that value.

    Raises TimeoutError naming `what` and the last value or exception seen, so a failing
    live test says what it was waiting for.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def _ignore_missing(action: Callable[[], object]) -> None:
    """Run a libvirt call; a domain/network that vanished meanwhile is fine."""
    try:
        action()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (
            libvirt.VIR_ERR_NO_DOMAIN,
            libvirt.VIR_ERR_NO_NETWORK,
            libvirt.VIR_ERR_OPERATION_INVALID,  # e.g. destroy of an inactive domain
        ):
            raise


def _undefine(dom) -> None:
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError as exc:
        # The LXC driver rejects these QEMU-only flags ("unsupported flags").
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        dom.undefine()


def cleanup_domains(conn, prefix: str) -> list[str]:
    """Destroy and undefine every domain whose name starts with prefix; return their names.

    Also removes networks with that prefix (same connection's daemon). Transient domains
    vanish on destroy; persistent ones are undefined too.
    """
    if not prefix:
        raise ValueError("cleanup_domains needs a non-empty prefix (it would remove everything)")
    removed = []
    for dom in conn.listAllDomains(0):
        name = dom.name()
        if not name.startswith(prefix):
            continue
        # Ask before destroying: a transient domain is gone once destroyed.
        persistent = dom.isPersistent()
        run = -1
        if dom.isActive():
            run = dom.ID()  # a container's libvirt_lxc
            _ignore_missing(dom.destroy)
        if persistent:
            _ignore_missing(lambda d=dom: _undefine(d))
        # a container's groups in the host's shared cgroup v1 hierarchies, which libvirt
        # leaves (virtmix's destroy removes them); nothing for a guest
        if run > 0:
            shared_cgroups.remove_run(name, run)
        shared_cgroups.sweep(name)
        removed.append(name)
    return removed + cleanup_networks(conn, prefix)


def cleanup_networks(conn, prefix: str) -> list[str]:
    """Destroy and undefine every libvirt network whose name starts with prefix."""
    if not prefix:
        raise ValueError("cleanup_networks needs a non-empty prefix")
    removed = []
    for net in conn.listAllNetworks(0):
        name = net.name()
        if not name.startswith(prefix):
            continue
        if net.isActive():
            _ignore_missing(net.destroy)
        if net.isPersistent():
            _ignore_missing(net.undefine)
        removed.append(name)
    return removed


def container_init_pid(name: str) -> int:
    """Host pid of a running LXC container's init, from libvirt's status file.

    libvirt 9.0 records it as <init pid='N'/> in /run/libvirt/lxc/NAME.xml.
    """
    status = LXC_STATE_DIR / f"{name}.xml"
    try:
        text = status.read_text()
    except FileNotFoundError:
        raise LookupError(f"container {name!r} is not running (no {status})") from None
    match = re.search(r"<init pid='(\d+)'/>", text)
    if not match:
        raise LookupError(f"no <init pid=...> in {status}")
    return int(match.group(1))


def lxc_run(
    name: str, argv: Sequence[str], timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv inside the running container `name`; returns the completed process.

    Uses nsenter into all of init's namespaces (including the user namespace, so root in
    an <idmap> container is uid 0, and the exit code is passed on); `virsh
    lxc-enter-namespace` does neither.
    """
    pid = container_init_pid(name)
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-a", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
