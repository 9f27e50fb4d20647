"""`virtmix execute`: one command in a temporary container, removed afterwards (lxc-execute).

The container is a transient libvirt LXC domain started with AUTODESTROY (libvirt removes
it when virtmix's connection closes, even if virtmix is killed). Its init is a static
busybox `sleep`, bind-mounted read-only from a private copy at /dev/.virtmix-exec (libvirt
mounts /dev as a tmpfs first, so nothing is created in the rootfs). The command itself runs
through the same path as `attach`, so it gets a terminal of its own relayed to this one,
Ctrl-C, and its exit code is passed on.
Without --rootfs the container shares the host's root filesystem (an application
container, as lxc-execute without a rootfs), with its own PID, IPC, UTS, mount and network
namespaces (loopback only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from lxml import etree
from lxml.builder import E

from virtmix.admin.namespaces import live_init_pid, run_inside
from virtmix.backend.admin_ops import create_transient
from virtmix.errors import NotFoundError, StateError, UsageError

HELPER_DIR = "/dev/.virtmix-exec"
STATIC_BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    import struct

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
    for path in STATIC_BUSYBOX:
        if os.path.isfile(path) and is_static_elf(path):
            return path
    raise UsageError("execute needs a statically linked busybox (Debian: busybox-static) "
                     "for the temporary container's init")


def execute_xml(name: str, rootfs: str | None, helper_dir: str, memory_kib: int) -> str:
    os_el = E.os(E.type("exe"), E.init(f"{HELPER_DIR}/busybox"),
                 E.initarg("sleep"), E.initarg("2147483647"))
    fs = []
    if rootfs:
        fs.append(E.filesystem(E.source(dir=rootfs), E.target(dir="/"),
                               type="mount", accessmode="passthrough"))
    fs.append(E.filesystem(E.source(dir=helper_dir), E.target(dir=HELPER_DIR), E.readonly(),
                           type="mount", accessmode="passthrough"))
    dom = E.domain(
        E.name(name), E.memory(str(memory_kib), unit="KiB"), E.vcpu("1"), os_el,
        E.features(E.privnet()),  # own network namespace: loopback only
        E.devices(*fs, E.console(type="pty")),  # the LXC driver requires a pty console
        type="lxc",
    )
    return etree.tostring(dom, encoding="unicode")


def _wait_init(conn, name: str, timeout: float = 10.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        rec = conn.get(name)
        try:
            return rec.id, live_init_pid(name, rec.id)  # never 0
        except StateError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def execute(conn, argv: list[str], *, rootfs: str | None, name: str | None,
            memory_kib: int, keep_env: bool = False) -> int:
    """Run argv in a new transient container on conn; returns the command's exit code."""
    if not argv:
        raise UsageError("execute: give the command after --, e.g. virtmix execute -- true")
    if rootfs and not Path(rootfs, argv[0].lstrip("/")).exists() and "/" in argv[0]:
        raise UsageError(f"execute: {argv[0]} does not exist in {rootfs}")
    name = name or f"virtmix-exec-{os.getpid()}"
    try:
        conn.get(name)
        raise UsageError(f"execute: a domain named {name!r} already exists on {conn.uri}")
    except NotFoundError:
        pass
    helper = tempfile.mkdtemp(prefix="virtmix-exec-")
    os.chmod(helper, 0o755)
    shutil.copy2(find_static_busybox(), os.path.join(helper, "busybox"))
    # Ctrl-C while the command runs goes to the command (admin/relay.py); before it
    # starts, it interrupts virtmix, and the finally below removes the container.
    try:
        create_transient(conn, execute_xml(name, rootfs, helper, memory_kib), autodestroy=True)
        controller, _init = _wait_init(conn, name)
        return run_inside(name, controller, argv, keep_env=keep_env)
    finally:
        try:
            conn.destroy(name)
        except (NotFoundError, StateError):
            pass
        shutil.rmtree(helper, ignore_errors=True)
