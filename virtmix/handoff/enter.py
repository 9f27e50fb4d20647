"""How the Ansible collection enters a container: the same namespaces and cgroups as attach.

Ansible's connection plugin (ansible_collections/virtmix/site) asks this module for the
command line that runs a shell command inside a container: on this machine with `nsenter
-t <init pid> -a` after joining the container's cgroups (as `virtmix attach`), or, for a
container nested in a guest, the same through ssh with virtmix's key and pinned host keys.
`-a` includes the user namespace, so in an <idmap> container the command runs as the
container's root (uid 0), which community.libvirt.libvirt_lxc (virsh lxc-enter-namespace)
does not do.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

# Only light modules: Ansible imports this in every forked worker, once per task and host.
from virtmix.hosts import cgroupfs
from virtmix.hosts.local import CONTAINER_PATH, enter_command, init_pid
from virtmix.hosts.ssh import init_pid_sh as _init_pid_sh

# The environment commands see inside: clean (host variables can hold secrets), as attach.
ENV = ["env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8",
       "container=lxc-libvirt"]


def _controller_pid(pid: int) -> int:
    """The libvirt_lxc controller is the parent of the container's init."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def local_command(name: str, shell_cmd: str) -> tuple[list[str], Callable[[], None]]:
    """argv and a preexec function that run `/bin/sh -c shell_cmd` in local container NAME."""
    pid = init_pid(name, None)
    dirs = cgroupfs.cgroup_dirs(_controller_pid(pid))
    argv = enter_command(pid, [*ENV, "/bin/sh", "-c", shell_cmd])
    return argv, lambda: cgroupfs.join_cgroups(dirs)


def remote_script(name: str, shell_cmd: str) -> str:
    """A script for the guest's shell that runs shell_cmd in its container NAME.

    Joins the container's cgroup first (virtmix's guests are pure cgroup v2: one group, the
    controller's), then enters all namespaces of its init.
    """
    env = " ".join(shlex.quote(a) for a in ENV)
    return (_init_pid_sh(name)
            + "ctl=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f2); "
            + "echo $$ > /sys/fs/cgroup$(cut -d: -f3 /proc/$ctl/cgroup | head -n1)"
            + "/cgroup.procs 2>/dev/null; "
            + f"exec nsenter -t \"$pid\" -a -- {env} /bin/sh -c {shlex.quote(shell_cmd)}")
