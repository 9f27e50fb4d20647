"""Fast read-only look-ups for shell completion: domain names of several URIs at once.

Each URI is opened read-only in its own daemon thread and the caller waits at most `timeout`
seconds overall: a host that does not answer (an ssh URI of a host that is down) costs the
completion nothing but its names, and a thread still connecting dies with the process.
"""

from __future__ import annotations

import threading
import time


def domain_names(uris: list[str], timeout: float = 0.15) -> dict[str, list[str]]:
    """uri -> domain names, for the URIs that answered within timeout (others are left out)."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    found: dict[str, list[str]] = {}

    def one(uri: str) -> None:
        try:
            conn = libvirt.openReadOnly(uri)
            try:
                found[uri] = [d.name() for d in conn.listAllDomains(0)]
            finally:
                conn.close()
        except libvirt.libvirtError:
            pass

    threads = [threading.Thread(target=one, args=(u,), daemon=True) for u in dict.fromkeys(uris)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for uri, t in zip(dict.fromkeys(uris), threads, strict=True):
        # test:///... is an in-process driver reading a file: it cannot hang, only be slow
        t.join(None if uri.startswith("test:") else max(0.0, deadline - time.monotonic()))
    return dict(found)
