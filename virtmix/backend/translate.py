"""libvirt errors -> virtmix errors that say what was attempted, where (backend-internal)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from virtmix.errors import BackendError, NotFoundError, StateError
from virtmix.util.uris import is_ssh_uri

# libvirt prints every error to stderr by default; we raise exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK}


def start_hint(uri: str) -> str:
    if uri.startswith("test:"):
        return ""
    if is_ssh_uri(uri):
        return " (check ssh access to that host and that libvirtd runs there)"
    return " (start it with: sudo bash scripts/setup-host.sh, or your init system's libvirtd)"


@contextmanager
def translate(what: str, uri: str) -> Iterator[None]:
    """Turn libvirtError into virtmix errors that say what was attempted where."""
    try:
        yield
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        msg = f"{what} on {uri}: {exc.get_error_message()}"
        if code in _NOT_FOUND:
            raise NotFoundError(msg) from None
        if code == libvirt.VIR_ERR_OPERATION_INVALID:
            raise StateError(msg) from None
        raise BackendError(msg) from None
