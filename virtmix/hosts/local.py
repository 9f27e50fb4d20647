"""This machine as a container host: its cgroup filesystem, containers' init, commands.

Used when a URI is local (util.uris.is_local): the domain IDs libvirt reports are pids
here, so the cgroup files and namespaces of a container are read and written directly.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from virtmix.errors import BackendError, StateError, UsageError
from virtmix.hosts import cgroupfs
from virtmix.util.polling import poll

# libvirt 9.0 keeps a running container's status (with <init pid='N'/>) here.
LXC_STATE_DIR = Path("/run/libvirt/lxc")
INIT_WAIT = 5.0  # seconds: right after a start the status file can still say pid 0


CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def enter_command(pid: int, argv: list[str]) -> list[str]:
    """nsenter into every namespace of pid (the user namespace too: root inside is uid 0)."""
    nsenter = shutil.which("nsenter")
    if not nsenter:
        raise UsageError("attach needs nsenter (util-linux); install util-linux")
    return [nsenter, "-t", str(pid), "-a", "--", *(argv or ["/bin/sh"])]


def _status_pid(name: str) -> int | None:
    """The init pid libvirt's status file names; None when absent or still 0 ("Init process
    ID is not yet known" right after a start)."""
    try:
        match = re.search(r"<init pid='(\d+)'/>", (LXC_STATE_DIR / f"{name}.xml").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _only_child(controller_pid: int | None) -> int | None:
    """The libvirt_lxc controller's (the domain's ID) child: the container's init."""
    if not controller_pid or controller_pid <= 0:
        return None
    try:
        kids = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text()
    except OSError:
        return None
    first = kids.split()[:1]
    return int(first[0]) if first and int(first[0]) > 0 else None


def init_pid(name: str, controller_pid: int | None, *, wait: float = INIT_WAIT) -> int:
    """Host pid of a running container's init, never 0.

    libvirt records it in its status file; older daemons do not, and right after a start
    it says 0: then the init is the only child of the libvirt_lxc controller (the domain's
    ID). If neither is known yet while the container runs (a controller, or a status file),
    ask again for up to `wait` seconds; a container that does not run fails at once.
    """
    def find() -> int | None:
        return _status_pid(name) or _only_child(controller_pid)

    pid = find()
    starting = bool(controller_pid) or (LXC_STATE_DIR / f"{name}.xml").exists()
    if pid is None and starting and wait > 0:
        pid = poll(find, timeout=wait, interval=0.05)
    if pid is None:
        raise StateError(f"cannot find the init process of container {name!r}: is it "
                         "running on this machine?")
    return pid


STATIC_BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3  # PT_INTERP
               for i in range(phnum))


def find_static_busybox() -> str:
    """This machine's static busybox (the init of execute's and create's containers)."""
    for path in STATIC_BUSYBOX:
        if os.path.isfile(path) and is_static_elf(path):
            return path
    raise UsageError("execute needs a statically linked busybox (Debian: busybox-static) "
                     "for the temporary container's init")


class LocalHost:
    """The machine virtmix runs on, for a local URI."""

    def __init__(self, uri: str = "lxc:///system") -> None:
        self.uri = uri

    def cgroup_root(self) -> str:
        return cgroupfs.cgroup_root()

    def cgroup_version(self) -> str:
        return cgroupfs.cgroup_version()

    def shares_are_weights(self) -> bool:
        return self.cgroup_version() == "v2"

    def run(self, argv: list[str], *, timeout: float = 60) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{argv[0]}: {exc}") from None
        if res.returncode != 0:
            raise BackendError(f"{' '.join(argv)!r} exited {res.returncode}: "
                               f"{res.stderr.strip()[-500:]}")
        return res.stdout

    def init_pid(self, name: str, controller_pid: int | None = None) -> int:
        return init_pid(name, controller_pid)

    def read_cpuset(self, pid: int) -> str | None:
        return cgroupfs.read_cpuset(pid)

    def write_cpuset(self, pid: int, cpus: frozenset[int]) -> None:
        cgroupfs.write_cpuset(pid, cpus)

    def push_tree(self, src: Path, dest: str, marker: str) -> None:
        """Copy the tree at src to dest (ownership kept), under dest.part renamed at the end."""
        part = Path(dest + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.mkdir()
        res = subprocess.run(["cp", "-a", "--", f"{src}/.", str(part)], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise BackendError(f"copying {src} to {dest}: {res.stderr.strip()[-400:]}")
        shutil.rmtree(dest, ignore_errors=True)
        part.rename(dest)
        Path(marker).touch()
