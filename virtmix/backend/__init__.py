"""The backend: the only code that imports libvirt.

`open_connection(uri)` returns a `Backend` (backend.protocol); the test driver
(`test:///...`) and a real daemon (`lxc:///system`, `qemu:///system`, `lxc+ssh://...`) are
interchangeable behind it.
"""

from __future__ import annotations

from collections.abc import Callable

from virtmix.backend.protocol import Backend
from virtmix.backend.records import DomainRecord, NetworkRecord, domain_state_name

__all__ = ["Backend", "DomainRecord", "NetworkRecord", "domain_state_name", "open_connection",
           "register_transport", "resolve_uri", "transport_registered"]

# URI -> how to really reach it. virtmix reaches the libvirt inside its guests through its
# own ssh setup (pinned host keys, its key); the inventory keeps the plain URI
# (lxc+ssh://root@ADDR/system). Filled by virtmix.nesting.guests when an inventory is loaded.
_TRANSPORTS: dict[str, Callable[[], str]] = {}


def register_transport(uri: str, resolve: Callable[[], str]) -> None:
    """Open resolve() (a URI with transport parameters) whenever `uri` is asked for."""
    _TRANSPORTS[uri] = resolve


def resolve_uri(uri: str) -> str:
    """The URI to really open for `uri` (itself unless a transport was registered)."""
    resolve = _TRANSPORTS.get(uri)
    return resolve() if resolve else uri


def transport_registered(uri: str) -> bool:
    """Whether virtmix reaches `uri` through its own ssh setup (see register_transport)."""
    return uri in _TRANSPORTS


def open_connection(uri: str | None = None, *, readonly: bool = False) -> Backend:
    """Open a libvirt connection (lazy import keeps `virtmix validate` free of libvirt)."""
    from virtmix.backend.libvirt_conn import Connection

    resolve = _TRANSPORTS.get(uri or "")
    if resolve is None:
        return Connection.open(uri, readonly=readonly)
    conn = Connection.open(resolve(), readonly=readonly)
    conn.uri = uri or conn.uri  # callers key connections (and show them) by the inventory's URI
    return conn
