"""The host's cgroup files of a process: where they are, the cpuset write libvirt lacks, joining.

libvirt has no live cpuset API for LXC domains, so `virtmix cgroup CT cpuset.cpus` writes the
container's cpuset cgroup itself. The libvirt_lxc controller (the domain's ID) sits in the
container's cgroups, and stays there even when a systemd inside moves its own processes.
"""

from __future__ import annotations

import os
from pathlib import Path

from virtmix.errors import BackendError
from virtmix.util.units import format_cpuset, normalize_cpuset, parse_cpuset


def mounts() -> dict[str, str]:
    """controller (or "" for the unified v2 hierarchy) -> mount point, from mountinfo."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _src, opts = (post.split() + ["", "", ""])[:3]
        mount_point = pre.split()[4]
        if fstype == "cgroup2":
            out.setdefault("", mount_point)
        elif fstype == "cgroup":
            for opt in opts.split(","):
                if opt not in ("rw", "ro") and "=" not in opt or opt.startswith("name="):
                    out.setdefault(opt, mount_point)
    return out


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """controller -> the directory of pid's cgroup in that hierarchy ("" = cgroup v2).

    A v1 hierarchy mounted with several controllers (cpu,cpuacct) is listed under each.
    """
    found = mounts()
    dirs: dict[str, Path] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise BackendError(f"cannot read the cgroups of process {pid}: {exc}") from None
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        for ctl in controllers.split(",") if controllers else [""]:
            if ctl in found:
                dirs[ctl] = Path(found[ctl] + path)
    return dirs


def cgroup_root() -> str:
    """The directory the cgroup hierarchies are mounted under (their common parent: the
    unified mount itself on pure v2, the tmpfs holding cpu/, memory/... on v1)."""
    found = [Path(p) for p in mounts().values()]
    if not found:
        raise BackendError("no cgroup file system is mounted")
    if len(found) == 1:
        return str(found[0])
    return os.path.commonpath([str(p) for p in found])


def cgroup_version() -> str:
    """'v2' when this machine's controllers are on the unified hierarchy, else 'v1'.

    Read from the mounts, not from a fixed path: a hybrid layout (v1 controllers plus an
    empty cgroup2 at /sys/fs/cgroup/unified) is v1 for libvirt, which uses the controllers.
    """
    found = mounts()
    v1 = [c for c in found if c and not c.startswith("name=")]
    return "v2" if "" in found and not v1 else "v1"


def _cpuset_dir(pid: int) -> Path | None:
    """pid's cgroup directory that holds cpuset.cpus (v1 cpuset hierarchy, or v2)."""
    dirs = cgroup_dirs(pid)
    top = dirs.get("cpuset")
    if top is None and (top := dirs.get("")) is not None:
        top = top if (top / "cpuset.cpus").exists() else None
    return top


def read_cpuset(pid: int) -> str | None:
    """The cpuset a running process really has (None: no cpuset cgroup, or it is empty).

    The LXC driver has no live cpuset API, so virtmix writes the cgroup itself and the
    running XML never shows it: the cgroup is the truth. A process that ended meanwhile
    has none either: a container stopping while a host is observed or listed (another
    admin's, another apply's) must not make that whole host unreadable.
    """
    try:
        top = _cpuset_dir(pid)
    except BackendError:  # /proc/PID/cgroup is gone: the process ended
        return None
    try:
        text = (top / "cpuset.cpus").read_text().strip() if top else ""
    except OSError:
        return None
    return normalize_cpuset(text) if text else None


def _subtree(top: Path) -> list[Path]:
    """top and its child cgroups, parents first."""
    out = [top]
    for dirpath, dirnames, _files in os.walk(top):
        out.extend(Path(dirpath) / d for d in sorted(dirnames))
    return out


def write_cpuset(pid: int, cpus: frozenset[int]) -> list[Path]:
    """Set cpuset.cpus of pid's cpuset cgroup and of every cgroup below it; the files
    written."""
    top = _cpuset_dir(pid)
    if top is None:
        raise BackendError(f"process {pid} has no cpuset cgroup to write")
    return write_cpuset_tree(top, cpus)


def write_cpuset_tree(top: Path, cpus: frozenset[int]) -> list[Path]:
    """Set cpuset.cpus of the cgroup `top` and of every cgroup below it.

    v1 refuses a parent set that excludes CPUs a child still uses, and a child set that is
    not inside its parent's: so widen top-down to old|new first, then narrow bottom-up.
    An empty set (v2: inherit from the parent) is left empty while widening.
    """
    groups = [g for g in _subtree(top) if (g / "cpuset.cpus").exists()]
    new = format_cpuset(cpus)
    try:
        old = parse_cpuset((top / "cpuset.cpus").read_text().strip() or new)
        wide = format_cpuset(old | cpus)
        for g in groups:
            if (g / "cpuset.cpus").read_text().strip():
                (g / "cpuset.cpus").write_text(wide + "\n")
        for g in reversed(groups):
            (g / "cpuset.cpus").write_text(new + "\n")
    except OSError as exc:
        raise BackendError(f"writing cpuset.cpus={new} under {top}: {exc.strerror}") from None
    return [g / "cpuset.cpus" for g in groups]


def write_cpuset_cgroup(cpus_file: Path, cpuset: str) -> None:
    """write_cpuset_tree for a cgroup named by its cpuset.cpus file and a cpuset text."""
    write_cpuset_tree(cpus_file.parent, parse_cpuset(cpuset))


def join_cgroups(dirs: dict[str, Path]) -> None:
    """Move the calling process into the given cgroups (run in a child before exec)."""
    done: set[Path] = set()
    for path in dirs.values():
        if path in done:
            continue
        done.add(path)
        procs = path / "cgroup.procs"
        try:
            procs.write_text(str(os.getpid()))
        except OSError:
            # e.g. the name=systemd hierarchy's root, or a v2 group with controllers on
            # inner nodes; joining the rest still puts the process under the limits.
            continue
