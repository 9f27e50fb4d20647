"""A container's figures from its cgroup files (v1 on hosts, v2 inside guests) and netns.

libvirt's LXC driver has no virConnectGetAllDomainStats, and its per-domain calls read these
same files one RPC at a time. Here a host container's files are read directly (the
libvirt_lxc controller, the domain's ID, sits in the container's cgroups); a nested one's
are read inside its guest with one ssh command for all containers of that guest.
The parsers are pure functions of the files' text.
"""

from __future__ import annotations

from pathlib import Path

from virtmix.errors import VirtmixError

UNLIMITED = 2**62  # v1 reports "no limit" as a page-rounded 2**63-1


def parse_blkio_v1(text: str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes -> (read, write) bytes over every device."""
    rd = wr = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write"):
            if parts[1] == "Read":
                rd += int(parts[2])
            else:
                wr += int(parts[2])
    return rd, wr


def parse_io_stat_v2(text: str) -> tuple[int, int]:
    """io.stat ("8:0 rbytes=N wbytes=N ...") -> (read, write) bytes over every device."""
    rd = wr = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                rd += int(value)
            elif key == "wbytes":
                wr += int(value)
    return rd, wr


def parse_cpu_stat_v2(text: str) -> int | None:
    """cpu.stat usage_usec -> nanoseconds."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    return None


def parse_limit(text: str) -> int | None:
    """memory.max ("max") or memory.limit_in_bytes (2**63-1 rounded): None when unlimited."""
    text = text.strip()
    if not text or text == "max":
        return None
    value = int(text)
    return None if value >= UNLIMITED else value


def parse_net_dev(text: str) -> tuple[int, int]:
    """/proc/PID/net/dev -> (received, transmitted) bytes of every interface but lo."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, data = line.partition(":")
        fields = data.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def figures(files: dict[str, str]) -> dict[str, int | None]:
    """Figures from whichever cgroup files (v1 or v2 names) and net/dev were read; a file
    that could not be parsed (a container stopping while read) leaves its figures out."""
    try:
        return _figures(files)
    except ValueError:
        return {}


def _figures(files: dict[str, str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    if "cpuacct.usage" in files:
        out["cpu_ns"] = int(files["cpuacct.usage"].strip())
    elif "cpu.stat" in files:
        out["cpu_ns"] = parse_cpu_stat_v2(files["cpu.stat"])
    for key, name in (("memory.usage_in_bytes", "memory_bytes"),
                      ("memory.current", "memory_bytes")):
        if key in files:
            out[name] = int(files[key].strip())
    for key in ("memory.limit_in_bytes", "memory.max"):
        if key in files:
            out["memory_limit_bytes"] = parse_limit(files[key])
    if "blkio.throttle.io_service_bytes" in files:
        out["block_read_bytes"], out["block_write_bytes"] = parse_blkio_v1(
            files["blkio.throttle.io_service_bytes"])
    elif "io.stat" in files:
        out["block_read_bytes"], out["block_write_bytes"] = parse_io_stat_v2(files["io.stat"])
    if "net/dev" in files:
        out["net_rx_bytes"], out["net_tx_bytes"] = parse_net_dev(files["net/dev"])
    return out


# controller -> files, for the host's v1 hierarchies and a v2 tree.
V1_FILES = {"cpuacct": ("cpuacct.usage",),
            "memory": ("memory.usage_in_bytes", "memory.limit_in_bytes"),
            "blkio": ("blkio.throttle.io_service_bytes",)}
V2_FILES = ("cpu.stat", "memory.current", "memory.max", "io.stat")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def local_files(name: str, controller_pid: int) -> dict[str, str]:
    """The cgroup files and net/dev of a container running on this machine."""
    from virtmix.hosts.cgroupfs import cgroup_dirs
    from virtmix.hosts.local import init_pid

    files: dict[str, str] = {}
    try:
        dirs = cgroup_dirs(controller_pid)
    except VirtmixError:
        return files
    if "" in dirs and not any(c in dirs for c in V1_FILES):
        wanted = [(dirs[""], f) for f in V2_FILES]
    else:
        wanted = [(dirs[c], f) for c, names in V1_FILES.items() if c in dirs for f in names]
    for directory, fname in wanted:
        text = _read(directory / fname)
        if text is not None:
            files[fname] = text
    try:
        pid = init_pid(name, controller_pid)
    except VirtmixError:
        return files
    text = _read(Path(f"/proc/{pid}/net/dev"))
    if text is not None:
        files["net/dev"] = text
    return files


def remote_script(ids: list[int]) -> str:
    """Shell that prints '@@ID FILE' then the file, for each container id in a guest (v2)."""
    names = " ".join(V2_FILES)
    return (f"for id in {' '.join(str(int(i)) for i in ids)}; do "
            "d=/sys/fs/cgroup$(cut -d: -f3 /proc/$id/cgroup 2>/dev/null) || continue; "
            f"for f in {names}; do echo \"@@$id $f\"; cat $d/$f 2>/dev/null; done; "
            "init=$(cut -d' ' -f1 /proc/$id/task/$id/children 2>/dev/null); "
            "[ -n \"$init\" ] && echo \"@@$id net/dev\" && cat /proc/$init/net/dev; "
            "done; true")


def parse_remote(output: str) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@@"):
            dom_id, _, fname = line[2:].partition(" ")
            current = []
            out.setdefault(int(dom_id), {})[fname] = current  # type: ignore[assignment]
        elif current is not None:
            current.append(line)
    return {i: {f: "\n".join(lines) + "\n" for f, lines in fs.items()}  # type: ignore[misc]
            for i, fs in out.items()}


def remote_files(uri: str, ids: list[int]) -> dict[int, dict[str, str]]:
    """The cgroup v2 files and net/dev of containers inside a guest: one ssh call."""
    from virtmix.nesting.ops import run_remote

    if not ids:
        return {}
    return parse_remote(run_remote(uri, remote_script(ids), timeout=20))
