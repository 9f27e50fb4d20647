"""`virtmix doctor`: a host preflight, each check ok / warn / fail with what to do about it.

Host checks read this machine (/proc, /sys, /dev); for a remote URI only the connection and
its drivers are checked there. The CLI exits 12 when a check fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import VirtmixError
from virtmix.hosts import cgroupfs

OK, WARN, FAIL = "ok", "warn", "fail"
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio")
INOTIFY_PER_CONTAINER = 6  # what one systemd container uses (measured here)
GIB = 1024**3


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def check_connection(uri: str) -> list[Check]:
    """libvirtd answers on uri; the driver is there; for QEMU, which guest types it offers."""
    from virtmix.backend import open_connection

    try:
        conn = open_connection(uri)
    except VirtmixError as exc:
        return [Check(f"libvirt {uri}", FAIL, exc.message,
                      "start libvirtd (sudo bash scripts/setup-host.sh installs and starts it)")]
    with conn:
        driver = conn.driver
        out = [Check(f"libvirt {uri}", OK, f"{driver} driver answers")]
        if driver == "qemu":
            caps = conn.capabilities()
            has_kvm = "type='kvm'" in caps or 'type="kvm"' in caps
            out.append(Check("qemu guest types", OK if has_kvm else WARN,
                             "kvm and qemu (TCG)" if has_kvm else "qemu (TCG) only",
                             "" if has_kvm else "guests need virt_type: qemu (software "
                             "emulation, slow) until KVM is available"))
    return out


def check_kvm() -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("/dev/kvm", WARN, "missing: no hardware virtualisation here",
                     "use virt_type: qemu for guests (hosts: virt_type: qemu)")
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as exc:
        return Check("/dev/kvm", WARN, f"not usable: {exc.strerror}",
                     "load kvm_intel/kvm_amd, check permissions, or use virt_type: qemu")
    return Check("/dev/kvm", OK, "usable (nested hosts may still hang with kvm: try qemu)")


def _cgroup_mounts() -> tuple[dict[str, str], str | None]:
    """v1 controller -> mount point, and the cgroup2 mount point (hosts.cgroupfs reads them)."""
    found = cgroupfs.mounts()
    return {k: v for k, v in found.items() if k}, found.get("")


def check_cgroups() -> list[Check]:
    v1, v2 = _cgroup_mounts()
    if v2 and not [c for c in v1 if not c.startswith("name=")]:
        layout = Check("cgroup layout", OK, "v2 (unified): shares are written as cpu.weight")
        ctrls = set((_read(f"{v2}/cgroup.controllers") or "").split())
        missing = [c for c in ("cpu", "cpuset", "memory", "io") if c not in ctrls]
    elif v1 and v2:
        return [Check("cgroup layout", FAIL, f"hybrid: v1 controllers plus cgroup2 at {v2}",
                      "libvirt 9.0 cannot start LXC domains with this layout (and libvirtd "
                      f"crashes): unmount {v2} before libvirtd starts; scripts/setup-host.sh "
                      "does it")]
    elif v1:
        layout = Check("cgroup layout", OK, "v1 (legacy hierarchies, no unified mount)")
        missing = [c for c in CONTROLLERS if c not in v1]
    else:
        return [Check("cgroup layout", FAIL, "no cgroup file system is mounted",
                      "mount cgroups (your init system normally does it)")]
    out = [layout]
    if missing:
        out.append(Check("cgroup controllers", FAIL if "memory" in missing else WARN,
                         f"missing: {', '.join(missing)}",
                         "enable them on the kernel command line (e.g. cgroup_enable=memory)"))
    else:
        out.append(Check("cgroup controllers", OK, "cpu, cpuset, memory, blkio/io, freezer"))
    return out


def check_userns() -> Check:
    limit = _read("/proc/sys/user/max_user_namespaces")
    if limit == "0":
        return Check("unprivileged containers", FAIL, "user namespaces disabled "
                     "(user.max_user_namespaces = 0)", "sysctl -w user.max_user_namespaces="
                     "15000 (and in /etc/sysctl.d) for <idmap> containers")
    tool = shutil.which("unshare")
    if tool:
        proc = subprocess.run([tool, "--user", "--map-root-user", "true"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return Check("unprivileged containers", FAIL, "cannot create a user namespace: "
                         f"{proc.stderr.strip()}", "check kernel user namespace support")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    note = (f"; kernel.unprivileged_userns_clone = {clone} does not matter (libvirtd creates "
            "them as root)" if clone is not None else "")
    return Check("unprivileged containers", OK, "user namespaces work; libvirt writes the "
                 f"<idmap> itself, no /etc/subuid entries needed{note}")


def check_overlay() -> Check:
    if "overlay" in (_read("/proc/filesystems") or ""):
        return Check("overlay clones", OK, "overlayfs available")
    modprobe = shutil.which("modprobe")
    if modprobe and subprocess.run([modprobe, "-n", "overlay"], capture_output=True,
                                   check=False).returncode == 0:
        return Check("overlay clones", WARN, "overlayfs is a module not loaded yet",
                     "modprobe overlay (and list it in /etc/modules)")
    return Check("overlay clones", WARN, "no overlayfs: clones are full copies (slower, "
                 "bigger)", "use a kernel with CONFIG_OVERLAY_FS")


def check_inotify() -> list[Check]:
    out = []
    instances = int(_read("/proc/sys/fs/inotify/max_user_instances") or 0)
    ceiling = instances // INOTIFY_PER_CONTAINER
    status = OK if instances >= 1024 else WARN
    out.append(Check("inotify instances", status,
                     f"fs.inotify.max_user_instances = {instances}: about {ceiling} systemd "
                     f"containers (~{INOTIFY_PER_CONTAINER} each)",
                     "" if status == OK else "sysctl -w fs.inotify.max_user_instances=1024 "
                     "(and in /etc/sysctl.d/) for more containers"))
    watches = int(_read("/proc/sys/fs/inotify/max_user_watches") or 0)
    if watches < 65536:
        out.append(Check("inotify watches", WARN, f"fs.inotify.max_user_watches = {watches}",
                         "sysctl -w fs.inotify.max_user_watches=524288"))
    return out


def check_storage(path: str) -> Check:
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    where = path if probe == Path(path) else f"{path} (not created yet; on {probe})"
    detail = f"{free / GIB:.1f} GiB free in {where}"
    if free < GIB:
        return Check("storage", FAIL, detail, "free space: a Debian tree needs ~200 MiB, a "
                     "guest image several GiB")
    if free < 10 * GIB:
        return Check("storage", WARN, detail, "10 GiB or more is comfortable for guests")
    return Check("storage", OK, detail)


def check_tools() -> list[Check]:
    out = []
    if not shutil.which("nsenter"):
        out.append(Check("nsenter", WARN, "missing: `attach` and `execute` need it",
                         "install util-linux"))
    if not (shutil.which("mmdebstrap") or shutil.which("debootstrap")):
        out.append(Check("rootfs builder", WARN, "neither mmdebstrap nor debootstrap",
                         "apt-get install mmdebstrap"))
    return out


def run_checks(uris: list[str], storage_dir: str, local: bool) -> list[Check]:
    checks: list[Check] = []
    for uri in uris:
        checks += check_connection(uri)
    if not local:
        checks.append(Check("host checks", WARN, "the checks below describe this machine, "
                            "not the URI's host", "run virtmix doctor on that host"))
    checks.append(check_kvm())
    checks += check_cgroups()
    checks.append(check_userns())
    checks.append(check_overlay())
    checks += check_inotify()
    checks.append(check_storage(storage_dir))
    checks += check_tools()
    return checks
