"""start, stop, freeze, unfreeze: state changes with the checks and waits lxc-* admins expect.

`start` is verified (virtmix.converge.verify): the domain must stay up for a settle window,
and with `--wait` a systemd container must report running/degraded.

`stop` is graceful first, like lxc-stop: it asks the domain to shut down, waits up to the
timeout, then destroys it (pulls the plug). How it asks:
  - KVM guests: libvirt's shutdown (ACPI power button).
  - containers whose init is systemd: libvirt's shutdown (initctl, then SIGTERM).
  - other containers: SIGPWR to their init, the halt signal of lxc-stop (busybox init
    halts on it; libvirt's SIGTERM would make busybox init *reboot*).
`--signal` chooses the signal for containers; `--force` destroys at once; `--no-kill`
leaves a domain that did not stop in time running (exit 8).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from virtmix.admin.targets import Target
from virtmix.backend.admin_ops import SIGNALS
from virtmix.converge.verify import WAIT_SECONDS, Started, guest_reach, verify_one
from virtmix.errors import NotFoundError, StateError, UsageError
from virtmix.hosts import is_local
from virtmix.hosts.local import init_pid
from virtmix.util.polling import wait_until

RUNNING = ("running", "blocked")


def start(target: Target, *, wait: bool = False, timeout: float = WAIT_SECONDS,
          site=None) -> str:
    """Start, then check it stayed up (and with wait: is ready); returns what --wait saw.

    StartFailedError (exit 8) names a domain that died, with its log's last lines."""
    state = target.record.state
    if state in RUNNING or state == "paused":
        raise StateError(f"start: {target.address} is already {state}",
                         hint="it resumes with `virtmix unfreeze`" if state == "paused"
                         else None)
    kind = "container" if target.record.kind == "lxc" else "guest"
    target.conn.start(target.name)
    reach = None
    if wait and kind == "guest" and site is not None:
        entry = next((e for e in site.entries if e.name == target.name
                      and e.kind == "guest"), None)
        reach = guest_reach(site, entry) if entry is not None else None
    started = Started(target.conn, target.name, target.address, kind, reach=reach)
    try:
        verify_one(started, wait=wait, timeout=timeout)
    finally:
        try:
            target.refresh()
        except NotFoundError:
            pass  # a transient domain that died is gone
    return started.note


def _cgroup_freezer(target: Target) -> bool:
    """Containers in virtmix's guests (pure cgroup v2) freeze through cgroup.freeze over
    ssh: libvirt 9.0's LXC driver has no v2 freezer ("Suspend operation failed")."""
    from virtmix.hosts import is_ssh_uri

    return bool(target.place.parent and is_ssh_uri(target.place.uri)
                and target.record.kind == "lxc" and target.record.id)


def freeze(target: Target) -> None:
    target.need_running("freeze")
    if target.record.state == "paused":
        raise StateError(f"freeze: {target.address} is already frozen (paused)")
    if _cgroup_freezer(target):
        from virtmix.nesting.ops import set_frozen

        set_frozen(target.place.uri, target.record.id, True, target.address)
        return
    target.conn.suspend(target.name)
    target.refresh()


def unfreeze(target: Target) -> None:
    if _cgroup_freezer(target) and target.record.state != "paused":
        from virtmix.nesting.ops import set_frozen

        set_frozen(target.place.uri, target.record.id, False, target.address)
        return
    if target.record.state != "paused":
        raise StateError(f"unfreeze: {target.address} is {target.record.state}, not frozen")
    target.conn.resume(target.name)
    target.refresh()


@dataclass
class StopResult:
    how: str  # "shutdown" (stopped by itself in time) or "destroyed"
    seconds: float


def _init_is_systemd(target: Target) -> bool:
    if not is_local(target.place.uri):
        return True  # cannot look: libvirt's own shutdown is the safe default
    try:
        pid = init_pid(target.name, target.record.id)
        return "systemd" in os.readlink(f"/proc/{pid}/exe")
    except (OSError, StateError):
        return True


def _ask(target: Target, signal: str | None) -> str:
    """Send the shutdown request; returns how it was asked (for the message)."""
    if target.record.kind == "lxc" and (signal or not _init_is_systemd(target)):
        sig = (signal or "SIGPWR").upper()
        sig = sig if sig.startswith("SIG") else "SIG" + sig
        if sig not in SIGNALS:
            raise UsageError(f"--signal {signal}: expected one of {', '.join(SIGNALS)}")
        target.conn.send_signal(target.name, sig)
        return sig
    target.conn.request_shutdown(target.name)
    return "shutdown request"


def _wait_stopped(target: Target, timeout: float) -> bool:
    return wait_until(lambda: target.refresh().record.state in ("shutoff", "crashed"),
                      timeout=timeout, interval=0.1)


def stop(target: Target, *, timeout: float, force: bool, kill: bool,
         signal: str | None = None) -> StopResult:
    if target.record.state in ("shutoff", "crashed", "nostate"):
        # Not "start it first": the admin wants it stopped, and it is.
        raise StateError(f"stop: {target.address} is already stopped "
                         f"({target.record.state}) on {target.place.uri}")
    target.need_running("stop")
    began = time.monotonic()
    if not force:
        if target.record.state == "paused":
            target.conn.resume(target.name)  # a frozen domain cannot act on the request
        _ask(target, signal)
        if _wait_stopped(target, timeout):
            return StopResult("shutdown", time.monotonic() - began)
        if not kill:
            raise StateError(f"stop: {target.address} did not stop within {timeout:g}s",
                             hint="use --force to destroy it, or a longer --timeout")
    # libvirt's own destroy: the domain stays defined, and virsh should see "destroyed"
    target.conn.destroy(target.name, kill_first=False)
    try:
        target.refresh()
    except NotFoundError:
        pass  # a transient domain is gone once destroyed
    return StopResult("destroyed", time.monotonic() - began)
