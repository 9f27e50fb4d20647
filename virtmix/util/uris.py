"""What a libvirt URI says about where its daemon runs: the one local-URI and ssh-URI check.

A URI is local when its daemon runs on this machine, so the domain IDs it reports are pids
here and their cgroups and namespaces are ours to read and write. Schemes compare
case-insensitively (`LXC:///system` is `lxc:///system`). An ssh (or libssh) transport is never
local, even to 127.0.0.1: a forwarded port can lead into a guest, whose pids are not ours.
Pure (no virtmix imports), so the backend's messages use it too; hosts/ re-exports it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_LOCAL_TRANSPORTS = ("", "unix")
_SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")


def _transport(uri: str) -> str:
    return urlsplit(uri).scheme.lower().partition("+")[2]


def is_local(uri: str) -> bool:
    """True when the URI's daemon runs on this machine (no host part, no ssh/tcp/tls)."""
    parts = urlsplit(uri)
    return not parts.hostname and _transport(uri) in _LOCAL_TRANSPORTS


def is_ssh_uri(uri: str) -> bool:
    """True for `driver+ssh://` (and libssh) URIs: hosts virtmix can also reach with ssh."""
    return _transport(uri) in _SSH_TRANSPORTS
