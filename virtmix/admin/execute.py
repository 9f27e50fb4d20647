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
from pathlib import Path

from virtmix.admin.namespaces import run_inside
from virtmix.backend.protocol import Backend
from virtmix.errors import NotFoundError, StateError, UsageError
from virtmix.hosts.local import find_static_busybox, init_pid
from virtmix.render.templates import render_execute
from virtmix.render.views import ExecuteView

HELPER_DIR = "/dev/.virtmix-exec"
def execute_xml(name: str, rootfs: str | None, helper_dir: str, memory_kib: int) -> str:
    """The transient domain, rendered from domain_templates/execute.xml.j2: its init is the
    helper busybox sleeping; its own network namespace has loopback only."""
    mounts = [(rootfs, "/", False)] if rootfs else []
    mounts.append((helper_dir, HELPER_DIR, True))
    return render_execute(ExecuteView(name, memory_kib, [f"{HELPER_DIR}/busybox", "sleep",
                                                         "2147483647"], mounts))


def _wait_init(conn: Backend, name: str, timeout: float = 10.0) -> tuple[int, int]:
    rec = conn.get(name)
    return rec.id, init_pid(name, rec.id, wait=timeout)


def execute(conn: Backend, argv: list[str], *, rootfs: str | None, name: str | None,
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
        conn.create_transient(execute_xml(name, rootfs, helper, memory_kib), autodestroy=True)
        controller, _init = _wait_init(conn, name)
        return run_inside(name, controller, argv, keep_env=keep_env)
    finally:
        try:
            conn.destroy(name)
        except (NotFoundError, StateError):
            pass
        shutil.rmtree(helper, ignore_errors=True)
