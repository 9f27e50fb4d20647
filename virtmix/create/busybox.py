"""`virtmix create --template busybox`: a busybox tree made in place (lxc-busybox's job).

Made in well under a second from the host's static busybox (Debian: busybox-static), so it
is not cached. It lives where the rootfs code keeps container trees
(STORAGE/containers/NAME/rootfs, its marker, a state file), so info, start and destroy
treat it like any tree virtmix made. busybox init runs rcS (loopback, eth0) and a getty on
the libvirt console; root's credentials are set by the rootfs code's own function.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from virtmix.errors import RootfsError, VirtmixError
from virtmix.util.files import sync_filesystem, write_file

CACHE_ENTRY = "busybox-static"  # recorded as the tree's base: there is no cache entry
_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "root", "tmp", "var/log", "run",
         "proc", "sys", "dev", "home", "mnt")
_INITTAB = """\
::sysinit:/etc/init.d/rcS
console::respawn:/sbin/getty -L 115200 console vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
"""


def _rcs(setup: Any) -> str:
    lines = ["#!/bin/sh", "# written by virtmix create --template busybox",
             "mount -t tmpfs -o mode=755 tmpfs /run", "mount -t tmpfs -o mode=1777 tmpfs /tmp",
             "hostname -F /etc/hostname", "ip link set lo up"]
    for iface in setup.interfaces:
        lines.append(f"ip link set {iface.name} up")
        if iface.ipv4:
            lines.append(f"ip addr add {iface.ipv4} dev {iface.name}")
        elif iface.dhcp:
            lines.append(f"udhcpc -b -q -s /etc/udhcpc.script -i {iface.name} >/dev/null 2>&1")
        if iface.gateway:
            lines.append(f"ip route add default via {iface.gateway}")
    return "\n".join(lines) + "\n"


# udhcpc only reports a lease; this applies it (busybox ships no default script).
_UDHCPC = """\
#!/bin/sh
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" ;;
esac
"""


def _static_busybox() -> str:
    from virtmix.hosts.local import find_static_busybox

    return find_static_busybox()


def _populate(tree: Path, setup: Any) -> None:
    for d in _DIRS:
        (tree / d).mkdir(parents=True, exist_ok=True)
    os.chmod(tree / "tmp", 0o1777)
    os.chmod(tree / "root", 0o700)
    shutil.copy2(_static_busybox(), tree / "bin/busybox")
    # One symlink per applet where busybox itself puts it (bin/sh, sbin/init, sbin/getty...).
    res = subprocess.run(["chroot", str(tree), "/bin/busybox", "--install", "-s"],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RootfsError(f"busybox --install in {tree} failed: {res.stderr.strip()}")
    etc = tree / "etc"
    write_file(etc / "passwd", "root:x:0:0:root:/root:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    write_file(etc / "group", "root:x:0:\nnogroup:x:65534:\n")
    write_file(etc / "shadow", "root:!*:19000:0:99999:7:::\nnobody:!*:19000:0:99999:7:::\n", 0o640)
    write_file(etc / "inittab", _INITTAB)
    write_file(etc / "init.d/rcS", _rcs(setup), 0o755)
    write_file(etc / "udhcpc.script", _UDHCPC, 0o755)
    write_file(etc / "securetty", "console\n")


def make_tree(storage: Any, name: str, setup: Any, privileged: bool,
              idmap: tuple[int, int, int, int] | None = None) -> dict:
    """Make STORAGE/containers/NAME/rootfs from busybox; returns the state it records.

    Unprivileged trees are owned by idmap (0, host uid, count, host gid), by default the
    container's own range (rootfs.idranges)."""
    from virtmix.rootfs import PASSWORD_FILE, remove_container_tree
    from virtmix.rootfs.customise import set_credentials, set_identity
    from virtmix.rootfs.idmap import shift_tree
    from virtmix.util.idranges import pick_for

    storage.ensure()
    if not privileged and idmap is None:
        idmap = pick_for(name, str(storage.root))  # 'auto': shared unless told the host
    cdir = storage.make_container_dir(name)
    t0 = time.monotonic()
    try:
        tree = cdir / "rootfs"
        tree.mkdir(mode=0o755)
        _populate(tree, setup)
        set_identity(tree, setup)
        password = set_credentials(tree, setup, cdir / PASSWORD_FILE)
        if idmap is not None and not privileged:
            # everything here is root-owned: 0 -> the container's mapped root
            shift_tree(tree, idmap[1], idmap[2], gid_offset=idmap[3])
        state = {"virtmix": 1, "name": name, "method": "copy", "cache_entry": CACHE_ENTRY,
                 "template": "busybox",
                 "idmap": None if privileged or idmap is None else list(idmap),
                 "privileged": privileged, "hostname": setup.fqdn, "sshd": False,
                 "root_login": ("password" if password else
                                "ssh-key" if setup.ssh_keys else "locked"),
                 "password_file": str(cdir / PASSWORD_FILE) if password else None,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "clone_seconds": round(time.monotonic() - t0, 3)}
        sync_filesystem(cdir)  # the tree on disk before the state marks it complete
        storage.write_state(name, state)  # last: a state file means the tree is complete
        return state
    except BaseException:
        with contextlib.suppress(VirtmixError, OSError):
            remove_container_tree(storage, name)
        raise
