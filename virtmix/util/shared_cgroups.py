"""Groups that containers' systemd made in the host's shared cgroup v1 hierarchies.

On a cgroup v1 host, the base's init wrapper (rootfs/cgroup_init.py) puts each container's
systemd in a `name=systemd` group named like libvirt's machine group,
`/machine/lxc-PID-NAME.libvirt-lxc` (or that name at the top, for an idmapped root that
cannot write /machine). libvirt never removes groups in `name=systemd` (nor in `pids`,
which it does not manage and where a privileged container's systemd keeps its groups under
the same path), so virtmix removes a container's groups through a local daemon: those of
the run it destroys (the domain's ID is the controller's pid: no listing), and at undefine
those of every ended run (a listing, once in a container's life).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/pids")
_GROUP = re.compile(r"lxc-(\d+)-(.+)\.libvirt-lxc")


def run_groups(name: str, pid: int, roots: Iterable[str] = HIERARCHIES) -> list[Path]:
    """Where the run of container `name` whose controller was `pid` (the domain's ID) may
    have made groups: no listing, so the cost does not grow with the containers."""
    group = f"lxc-{pid}-{name}.libvirt-lxc"
    return [Path(root) / sub / group for root in roots for sub in ("machine", "")]


def stale_groups(name: str, roots: Iterable[str] = HIERARCHIES) -> list[Path]:
    """The groups container `name` made (in `machine/` or at the top of each hierarchy)
    in runs whose controller is gone (its pid is in the group's name): they hold no
    process any more and no run will use them again (a new run has a new pid).
    Lists the directories (about 1 ms at 2,000 containers): for undefine, once a life."""
    found = []
    tail = f"-{name}.libvirt-lxc"
    for root in roots:
        for parent in (Path(root) / "machine", Path(root)):
            try:
                entries = [e for e in os.scandir(parent) if e.name.endswith(tail)]
            except OSError:
                continue
            for e in entries:
                m = _GROUP.fullmatch(e.name)
                if m and m.group(2) == name and e.is_dir(follow_symlinks=False) \
                        and not controller_alive(int(m.group(1)), name):
                    found.append(Path(e.path))
    return found


def controller_alive(pid: int, name: str) -> bool:
    """The libvirt_lxc of container `name` still runs as pid (a reused pid runs something
    else; a zombie, which this machine's pid 1 may never reap, has no command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[0].endswith(b"libvirt_lxc") and name.encode() in argv


def remove_group(path: Path) -> bool:
    """rmdir a cgroup and its children, deepest first; False when one is busy (has
    processes) or could not be removed for another reason (then left as it is)."""
    ok = True
    try:
        children = [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for child in children:
        ok = remove_group(child) and ok
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return ok


def remove_run(name: str, pid: int, roots: Iterable[str] = HIERARCHIES,
               wait: float = 1.0) -> int:
    """After a container's run ended: remove its groups; how many went. Its controller
    `pid` exits with the container's init, a moment after libvirt says it stopped: waited
    for up to `wait` s; still alive, nothing is removed (undefine's sweep will)."""
    deadline = time.monotonic() + wait
    while controller_alive(pid, name):
        if time.monotonic() > deadline:
            return 0
        time.sleep(0.01)
    return sum(1 for g in run_groups(name, pid, roots) if g.is_dir() and remove_group(g))


def sweep(name: str, roots: Iterable[str] = HIERARCHIES) -> int:
    """Remove what ended runs of container `name` left in the shared hierarchies; returns
    how many groups went. Safe while other containers run: only dead runs' groups."""
    return sum(1 for g in stale_groups(name, roots) if remove_group(g))
