"""Host-side facts about running containers of a local libvirt LXC driver (init pid)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from virtmix.errors import StateError, UsageError

# libvirt 9.0 keeps a running container's status (with <init pid='N'/>) here.
LXC_STATE_DIR = Path("/run/libvirt/lxc")


CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def enter_command(pid: int, argv: list[str]) -> list[str]:
    """nsenter into every namespace of pid (the user namespace too: root inside is uid 0)."""
    nsenter = shutil.which("nsenter")
    if not nsenter:
        raise UsageError("attach needs nsenter (util-linux); install util-linux")
    return [nsenter, "-t", str(pid), "-a", "--", *(argv or ["/bin/sh"])]


def is_local(uri: str) -> bool:
    """True when the URI's daemon runs on this machine (no host part, no ssh/tcp/tls)."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return not parts.hostname and transport in ("", "unix")


def require_local(uri: str, verb: str, name: str) -> None:
    if not is_local(uri):
        raise UsageError(
            f"{verb} {name}: the container runs behind {uri}, not on this machine",
            hint="run virtmix on that host (or inside the guest) for this verb")


def init_pid(name: str, controller_pid: int | None) -> int:
    """Host pid of a running container's init.

    libvirt records it in its status file; older daemons do not, then the init is the only
    child of the libvirt_lxc controller (the domain's ID).
    """
    try:
        match = re.search(r"<init pid='(\d+)'/>", (LXC_STATE_DIR / f"{name}.xml").read_text())
        if match:
            return int(match.group(1))
    except OSError:
        pass
    if controller_pid:
        try:
            kids = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text()
            if kids.split():
                return int(kids.split()[0])
        except OSError:
            pass
    raise StateError(f"cannot find the init process of container {name!r}: is it running "
                     "on this machine?")
