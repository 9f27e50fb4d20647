"""Minimal libvirt LXC domains for the rootfs tests and benchmark (the core renders real ones)."""

from __future__ import annotations

import subprocess
import time
from xml.sax.saxutils import quoteattr

import libvirt

from virtmix.util import shared_cgroups

URI = "lxc:///system"
PREFIX = "vmixt-rootfs-"  # every domain and tree the rootfs tests and benchmark make


def domain_xml(name: str, rootfs: str, idmap: tuple[int, ...] | None,
               memory_mib: int = 256, veth: bool = False) -> str:
    """<domain type='lxc'> booting /sbin/init from rootfs, with a private netns.

    veth=True adds an eth0 whose host end is attached to nothing (<interface
    type='ethernet'>): the container configures an address without any traffic leaving.
    """
    idmap_xml = ""
    if idmap:
        start, target, count, *gid = idmap  # (start, uid, count[, gid])
        gtarget = gid[0] if gid else target
        idmap_xml = (f"<idmap><uid start='{start}' target='{target}' count='{count}'/>"
                     f"<gid start='{start}' target='{gtarget}' count='{count}'/></idmap>")
    iface = "<interface type='ethernet'/>" if veth else ""
    return f"""<domain type='lxc'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <os><type>exe</type><init>/sbin/init</init></os>
  {idmap_xml}
  <features><privnet/></features>
  <devices>
    <filesystem type='mount'><source dir={quoteattr(rootfs)}/><target dir='/'/></filesystem>
    {iface}<console type='pty'/>
  </devices>
</domain>"""


def _silence(_ctx, _err):
    pass


def connect(wait: float = 30.0) -> libvirt.virConnect:
    """Open lxc:///system, waiting up to `wait` s for a libvirtd that is (re)starting."""
    libvirt.registerErrorHandler(_silence, None)
    deadline = time.monotonic() + wait
    while True:
        try:
            return libvirt.open(URI)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def init_pid(conn: libvirt.virConnect, name: str) -> int:
    """Host pid of the container's init: the child of libvirt_lxc (the domain's ID)."""
    ctl = conn.lookupByName(name).ID()
    with open(f"/proc/{ctl}/task/{ctl}/children") as f:
        return int(f.read().split()[0])


def run_inside(conn: libvirt.virConnect, name: str, *argv: str,
               check: bool = False) -> subprocess.CompletedProcess:
    """Run argv in all of the container's namespaces, user namespace included.

    `virsh lxc-enter-namespace` does not enter the user namespace of an <idmap> container,
    and systemctl then fails ("Failed to connect to bus"); nsenter with init's pid does,
    and passes the exit code on.
    """
    return subprocess.run(["nsenter", "-t", str(init_pid(conn, name)), "-a", *argv],
                          capture_output=True, text=True, timeout=20, check=check)


def system_state(conn: libvirt.virConnect, name: str) -> str:
    """`systemctl is-system-running` inside the container."""
    try:
        res = run_inside(conn, name, "/bin/systemctl", "is-system-running")
    except (OSError, ValueError, IndexError, libvirt.libvirtError):
        return ""
    return res.stdout.strip()


def wait_running(conn: libvirt.virConnect, name: str,
                 timeout: float = 60.0) -> tuple[str, float]:
    """Poll until systemd says running/degraded; (state, seconds waited)."""
    t0 = time.monotonic()
    state = ""
    while time.monotonic() - t0 < timeout:
        state = system_state(conn, name)
        if state in ("running", "degraded"):
            break
        time.sleep(0.02)
    return state, time.monotonic() - t0


def destroy_undefine(conn: libvirt.virConnect, name: str) -> None:
    """Destroy and undefine a domain by name, if it exists."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    run = -1
    try:
        if dom.isActive():
            run = dom.ID()  # the container's libvirt_lxc
            dom.destroy()
    except libvirt.libvirtError:
        pass
    try:
        dom.undefine()
    except libvirt.libvirtError:
        pass
    # the groups its systemd made in the host's shared cgroup v1 hierarchies (virtmix's
    # destroy removes them; libvirt's does not)
    if run > 0:
        shared_cgroups.remove_run(name, run)
    shared_cgroups.sweep(name)


def console_text(conn: libvirt.virConnect, name: str, want: str, timeout: float = 15.0) -> str:
    """Read the domain's console (as `virsh console` would) until `want` shows up."""
    dom = conn.lookupByName(name)
    st = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    dom.openConsole(None, st, 0)  # the LXC driver refuses CONSOLE_FORCE
    buf = b""
    t0 = last_nl = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and want.encode() not in buf:
            data = st.recv(4096)
            if data == -2:  # would block
                if time.monotonic() - last_nl > 1.0:  # a getty prompts again on a newline
                    st.send(b"\r")
                    last_nl = time.monotonic()
                time.sleep(0.05)
                continue
            if not data:
                break
            buf += data
    finally:
        try:
            st.abort()
        except libvirt.libvirtError:
            pass
    return buf.decode(errors="replace")

