"""The backend: the only code that imports libvirt.

`open_connection(uri)` returns a Connection; the test driver (`test:///...`) and a real
daemon (`lxc:///system`, `qemu:///system`, `lxc+ssh://...`) are interchangeable behind it.
"""

from __future__ import annotations

from .records import DomainRecord, NetworkRecord, domain_state_name

__all__ = ["DomainRecord", "NetworkRecord", "domain_state_name", "open_connection"]


def open_connection(uri: str | None = None, *, readonly: bool = False):
    """Open a libvirt connection (lazy import keeps `virtmix validate` free of libvirt)."""
    from .libvirt_conn import Connection

    return Connection.open(uri, readonly=readonly)
