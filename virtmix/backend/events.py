"""libvirt's event API for `virtmix watch`: a default event loop in a thread, lifecycle
callbacks on every connection, and plain event records in a queue.

virEventRegisterDefaultImpl must run before the connections that deliver events are opened;
the loop thread then runs virEventRunDefaultImpl for the life of the process (libvirt's
event loop cannot be unregistered). Callbacks run on that thread and only enqueue.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import libvirt

from virtmix.errors import BackendError

_loop_lock = threading.Lock()
_loop_started = False

# virDomainEventType -> word; (type, detail) -> word (libvirt's virsh event names).
EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
DETAILS = {
    "defined": ("added", "updated", "renamed", "snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "snapshot", "wakeup"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "snapshot",
                  "api-error", "postcopy", "postcopy-failed"),
    "resumed": ("unpaused", "migrated", "snapshot", "postcopy", "postcopy-failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "pmsuspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
}


@dataclass(frozen=True)
class LifecycleEvent:
    uri: str
    name: str
    uuid: str
    event: str         # defined, undefined, started, stopped, suspended, resumed, ...
    detail: str        # destroyed, shutdown, added, updated, ...
    time: float        # when the callback ran (time.time())
    xml: str | None = None  # the new definition, for defined events


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_loop, name="virtmix-libvirt-events", daemon=True).start()
        _loop_started = True


class EventStream:
    """Lifecycle events of every domain on some connections, as LifecycleEvent in a queue."""

    def __init__(self, *, definitions: bool = True) -> None:
        """definitions=False: `defined` events come without the new definition (no read
        of it per define: a density benchmark counting starts wants only the events)."""
        start_event_loop()
        self._definitions = definitions
        self.events: queue.Queue[LifecycleEvent | tuple[str, str]] = queue.Queue()
        self._conns: list[tuple[libvirt.virConnect, int]] = []

    def _callback(self, _conn: Any, dom: Any, event: int, detail: int, uri: str) -> None:
        word = EVENTS.get(event, str(event))
        details = DETAILS.get(word, ())
        xml = None
        if word == "defined" and self._definitions:
            try:  # read here: by the time the consumer asks, it may be gone again
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError:
                xml = None
        self.events.put(LifecycleEvent(uri, dom.name(), dom.UUIDString(), word,
                                       details[detail] if 0 <= detail < len(details)
                                       else str(detail), time.time(), xml))

    def _closed(self, _conn: Any, reason: int, uri: str) -> None:
        self.events.put(("connection-lost", uri))

    def watch(self, uri: str) -> None:
        """Open `uri` (read-only) and deliver its domains' lifecycle events."""
        from virtmix.backend import resolve_uri

        try:
            conn = libvirt.openReadOnly(resolve_uri(uri))
            cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                             self._callback, uri)
        except libvirt.libvirtError as exc:
            raise BackendError(f"cannot watch events on {uri}: {exc.get_error_message()}"
                               ) from None
        try:  # remote connections only (the test driver has neither)
            conn.setKeepAlive(5, 3)
            conn.registerCloseCallback(self._closed, uri)
        except libvirt.libvirtError:
            pass
        self._conns.append((conn, cb))

    def close(self) -> None:
        for conn, cb in self._conns:
            try:
                conn.domainEventDeregisterAny(cb)
                conn.unregisterCloseCallback()
                conn.close()
            except libvirt.libvirtError:
                pass
        self._conns.clear()
