"""Stable identities derived from names: UUIDs and MAC addresses (uuid5), no randomness.

The same inventory renders the same XML on every run, so golden files and plans stay stable.
`apply` still keeps a domain's existing UUID and MACs when it redefines it.
"""

from __future__ import annotations

import hashlib
import uuid

VIRTMIX_NS = "https://virtmix.dev/xmlns/domain/1"
_UUID_NS = uuid.uuid5(uuid.NAMESPACE_URL, VIRTMIX_NS)
_NS_BYTES = _UUID_NS.bytes


def _uuid5_text(name: str) -> str:
    """str(uuid.uuid5(_UUID_NS, name)) without building a UUID object (a third of the cost
    of a domain's view when rendering 85,000 containers): SHA-1 of namespace and name, the
    version nibble set to 5 and the variant bits to RFC 4122, as uuid.uuid5 does."""
    digest = bytearray(hashlib.sha1(_NS_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def domain_uuid(uri: str, name: str) -> str:
    return _uuid5_text(f"domain|{uri}|{name}")


def network_uuid(site: str, host: str, name: str) -> str:
    """A network's UUID: libvirt 9.0 networks carry no metadata, so the UUID says which
    site made it. Two sites that both call their host `local` get different UUIDs."""
    return str(uuid.uuid5(_UUID_NS, f"network|{site}|{host}|{name}"))


def legacy_network_uuid(host: str, name: str) -> str:
    """The UUID virtmix gave networks before they were owned per site. Such a network is
    still virtmix's when its inventory names it (libvirt cannot change a UUID in place),
    but it names no site, so it is never listed as an orphan nor pruned."""
    return str(uuid.uuid5(_UUID_NS, f"network|{host}|{name}"))


def owns_network(network_uuid_seen: str, site: str, host: str, name: str) -> bool:
    """Whether a network of this name on `host` is this site's (or a pre-site network)."""
    return network_uuid_seen in (network_uuid(site, host, name), legacy_network_uuid(host, name))


def mac_address(uri: str, name: str, index: int) -> str:
    """A locally administered MAC in QEMU's 52:54:00 prefix, as libvirt itself generates."""
    digest = uuid.uuid5(_UUID_NS, f"mac|{uri}|{name}|{index}").bytes
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*digest[:3])


# The one user-namespace mapping of unprivileged containers (<idmap>, lxc.idmap): uid/gid 0
# inside -> IDMAP_OFFSET on the host, IDMAP_COUNT ids; their trees are owned by that range.
IDMAP_OFFSET = 100000
IDMAP_COUNT = 65536
IDMAP = (0, IDMAP_OFFSET, IDMAP_COUNT)  # (container id, host id, count)
