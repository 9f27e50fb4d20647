"""Stable identities: domain UUIDs are uuid5 of the virtmix namespace, computed without a
UUID object (virtmix.util.identity._uuid5_text) but bit for bit the standard ones."""

from __future__ import annotations

import random
import uuid

from virtmix.util.identity import _UUID_NS, domain_uuid


def test_domain_uuid_is_the_standard_uuid5():
    rng = random.Random(9)
    alphabet = "abcXYZ019-_.|/:@ \t\né€\U0001d11e"
    names = ["", "c0-0", "lxc:///system"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(5000)]
    for uri in ("lxc:///system", "qemu+ssh://root@h/system"):
        for name in names:
            expected = uuid.uuid5(_UUID_NS, f"domain|{uri}|{name}")
            got = domain_uuid(uri, name)
            assert got == str(expected), (uri, name)
            assert uuid.UUID(got).version == 5
