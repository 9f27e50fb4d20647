"""Classic LXC container configs (/var/lib/lxc/NAME/config) -> inventory container entries.

Both generations of key names are read (LXC 2: lxc.utsname, lxc.rootfs, lxc.network.*,
lxc.id_map, lxc.init_cmd; LXC 3+: lxc.uts.name, lxc.rootfs.path, lxc.net.N.*, lxc.idmap,
lxc.init.cmd). What has no inventory equivalent is reported as a note, never dropped
silently. lxc.include files are followed for their id maps only (lxc.idmap/lxc.id_map, as
userns.conf setups keep them there); the rest of them is LXC's own defaults (devices,
capabilities) that libvirt sets its own way. A container with an id map is imported with
that map as its `idmap:`, so it stays unprivileged with the ownership its tree has.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtmix.inventory import cgroups
from virtmix.util.units import format_kib, parse_size_kib

_IDMAP_KEYS = ("lxc.idmap", "lxc.id_map")
_MAX_INCLUDE_DEPTH = 8
# Keys that only concern LXC's own runtime (console ttys, apparmor, hooks, signals...).
_IGNORED = re.compile(r"^lxc\.(tty|pty|console|apparmor|seccomp|cap|hook|signal|autodev|"
                      r"arch|start\.(delay|order)|group|log|mount\.auto|environment)")


@dataclass
class ClassicEntry:
    name: str
    entry: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def read_config(path: Path) -> list[tuple[str, str]]:
    """KEY = VALUE pairs in file order (keys repeat: devices.allow, mount.entry, ...)."""
    pairs = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (p.strip() for p in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs.append((key, value))
    return pairs


def _net_key(key: str) -> tuple[int | None, str] | None:
    """lxc.net.N.KEY -> (N, KEY); lxc.network.KEY -> (None, KEY); else None."""
    m = re.match(r"^lxc\.net\.(\d+)\.(.+)$", key)
    if m:
        return int(m.group(1)), m.group(2)
    if key.startswith("lxc.network."):
        return None, key[len("lxc.network."):]
    return None


def _networks(pairs: list[tuple[str, str]], notes: list[str]) -> list[dict[str, Any]]:
    nets: dict[int, dict[str, str]] = {}
    legacy = -1
    for key, value in pairs:
        parsed = _net_key(key)
        if parsed is None:
            continue
        index, sub = parsed
        if index is None:  # LXC 2: each lxc.network.type starts the next interface
            legacy += sub == "type"
            index = max(legacy, 0)
        nets.setdefault(index, {})[sub.replace("ipv4.address", "ipv4")] = value
    out = []
    for index in sorted(nets):
        net = nets[index]
        kind = net.get("type", "")
        if kind == "empty":
            continue  # a private network namespace with only lo: virtmix's default
        if kind not in ("veth",) or not net.get("link"):
            notes.append(f"network {index}: type {kind or '?'} "
                         f"{'without a link bridge ' if kind == 'veth' else ''}has no "
                         "inventory equivalent (veth on a bridge, or none); not imported")
            continue
        iface: dict[str, Any] = {"bridge": net["link"]}
        if net.get("name"):
            iface["name"] = net["name"]
        if re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", net.get("hwaddr", "")):
            iface["mac"] = net["hwaddr"].lower()
        if net.get("ipv4"):
            iface["ipv4"] = net["ipv4"].split()[0]
        if net.get("ipv4.gateway") not in (None, "", "auto"):
            iface["gateway"] = net["ipv4.gateway"]
        out.append(iface)
    return out


def _mount(value: str, notes: list[str]) -> dict[str, Any] | None:
    """lxc.mount.entry = SRC DST TYPE OPTIONS ... -> a bind mount, or a note."""
    parts = value.split()
    if len(parts) < 4 or "bind" not in parts[3].split(","):
        notes.append(f"mount entry {value!r} is not a bind mount; not imported")
        return None
    src, dst, opts = parts[0], parts[1], parts[3].split(",")
    if not Path(src).exists():
        notes.append(f"bind mount of {src} skipped: it does not exist on this host"
                     + (" (it was optional)" if "optional" in opts else ""))
        return None
    return {"source": src, "target": "/" + dst.lstrip("/"), "readonly": "ro" in opts}


def included_idmaps(values: dict[str, list[str]], notes: list[str], depth: int = 0
                    ) -> list[str]:
    """lxc.idmap/lxc.id_map values of the files lxc.include names (a file, or a directory
    whose *.conf are read in order), following their own includes."""
    found: list[str] = []
    for inc in values.get("lxc.include", []):
        path = Path(inc)
        files = sorted(path.glob("*.conf")) if path.is_dir() else [path]
        for f in files:
            try:
                pairs = read_config(f)
            except OSError as e:
                notes.append(f"lxc.include {f}: cannot read it ({e.strerror}); an id map "
                             "there would be missed")
                continue
            sub: dict[str, list[str]] = {}
            for key, value in pairs:
                sub.setdefault(key, []).append(value)
            found += [v for k in _IDMAP_KEYS for v in sub.get(k, [])]
            if depth < _MAX_INCLUDE_DEPTH:
                found += included_idmaps(sub, notes, depth + 1)
    return found


def _idmap(values: list[str], entry: dict[str, Any], notes: list[str]) -> None:
    """An id map becomes the entry's `idmap:` (uid/gid ranges that start at container id
    0); without one the container was privileged, and stays so."""
    ranges: dict[str, list[tuple[int, int, int]]] = {"u": [], "g": []}
    for v in values:
        parts = v.split()
        try:
            kind, start, target, count = parts[0], *map(int, parts[1:4])
        except (ValueError, IndexError):
            notes.append(f"id map {v!r}: expected 'u|g|b START TARGET COUNT'; not imported")
            continue
        for k in ("u", "g") if kind == "b" else (kind,):
            if k in ranges:
                ranges[k].append((start, target, count))
    if not values:
        entry["privileged"] = True
        return
    entry["privileged"] = False  # never silently privileged: root inside stays mapped
    at_zero = {k: [r for r in rs if r[0] == 0] for k, rs in ranges.items()}
    if not at_zero["u"] or not at_zero["g"]:
        notes.append(f"id map {values}: no uid and gid range starting at container id 0; "
                     "write idmap: {uid, gid, count} for it before starting")
        return
    (_, uid, ucount), (_, gid, gcount) = at_zero["u"][0], at_zero["g"][0]
    if uid == 0 or gid == 0:
        notes.append(f"id map {values} maps container root to host root: write idmap: for "
                     "a real range before starting")
        return
    entry["idmap"] = {"uid": uid, "gid": gid, "count": min(ucount, gcount)}
    if ucount != gcount or len(ranges["u"]) > 1 or len(ranges["g"]) > 1:
        notes.append(f"id map {values}: only the ranges at container id 0 are imported "
                     f"(idmap: uid {uid}, gid {gid}, count {min(ucount, gcount)})")


def _cgroup(pairs: list[tuple[str, str]], entry: dict[str, Any], notes: list[str]) -> None:
    block: dict[str, str] = {}
    for key, value in pairs:
        if not key.startswith(("lxc.cgroup.", "lxc.cgroup2.")):
            continue
        name = cgroups.canonical_key(key)
        if name.startswith("devices."):
            continue  # device policy: libvirt sets its own
        try:
            cgroups.lookup(name)
        except cgroups.CgroupKeyError:
            notes.append(f"{key} = {value} has no inventory equivalent; not imported")
            continue
        block[name] = value
    if block:
        entry["cgroup"] = block
    limit = block.get("memory.limit_in_bytes") or block.get("memory.max")
    if limit and limit not in ("-1", "max"):
        entry["memory"] = format_kib(parse_size_kib(int(limit) if limit.isdigit() else limit))


def config_to_entry(name: str, config: Path) -> ClassicEntry:
    """The inventory entry for the classic container whose config file this is."""
    pairs = read_config(config)
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)

    def last(*keys: str) -> str | None:
        found = [values[k][-1] for k in keys if k in values]
        return found[-1] if found else None

    result = ClassicEntry(name, {"description": f"imported from classic LXC {config}"})
    entry, notes = result.entry, result.notes
    hostname = last("lxc.utsname", "lxc.uts.name")
    if hostname and hostname != name:
        entry["hostname"] = hostname
    rootfs = last("lxc.rootfs", "lxc.rootfs.path") or str(config.parent / "rootfs")
    backend, _, path = rootfs.partition(":") if ":" in rootfs else ("dir", "", rootfs)
    if backend != "dir" or not path.startswith("/"):
        notes.append(f"rootfs {rootfs!r}: only directory trees can be imported")
        path = str(config.parent / "rootfs")
    entry["rootfs"] = {"path": path}
    init = last("lxc.init.cmd", "lxc.init_cmd")
    entry["init"] = shlex.split(init) if init else ["/sbin/init"]
    _idmap(values.get("lxc.idmap", []) + values.get("lxc.id_map", [])
           + included_idmaps(values, notes), entry, notes)
    _cgroup(pairs, entry, notes)
    interfaces = _networks(pairs, notes)
    if interfaces:
        entry["interfaces"] = interfaces
    mounts = [m for v in values.get("lxc.mount.entry", []) if (m := _mount(v, notes))]
    if mounts:
        entry["mounts"] = mounts
    if "lxc.include" in values:
        notes.append("lxc.include files followed for their id maps only (the rest is "
                     "LXC's own defaults)")
    entry["autostart"] = last("lxc.start.auto") == "1"
    # Two inits on one tree would fight: the classic container may still run.
    entry["state"] = "stopped"
    notes.append("state: stopped; set running once the classic container is stopped "
                 "and disabled (lxc-stop, lxc.start.auto = 0)")
    for key in values:
        known = key.startswith(("lxc.cgroup", "lxc.net", "lxc.network", "lxc.mount.entry",
                                "lxc.idmap", "lxc.id_map", "lxc.include", "lxc.init",
                                "lxc.rootfs", "lxc.utsname", "lxc.uts.name", "lxc.start.auto"))
        if not known and not _IGNORED.match(key):
            notes.append(f"{key} has no inventory equivalent; not imported")
    return result


def classic_containers(lxc_path: Path, names: set[str] | None = None) -> list[ClassicEntry]:
    """Classic containers as inventory entries, from what an admin would point at: a config
    file (/var/lib/lxc/NAME/config), a container's directory (/var/lib/lxc/NAME), or an
    lxcpath holding many (/var/lib/lxc: each NAME/config, or only the named ones)."""
    from virtmix.errors import NotFoundError

    if lxc_path.is_file():
        name = lxc_path.parent.name if lxc_path.name == "config" else lxc_path.stem
        return [config_to_entry(name, lxc_path)]
    if not lxc_path.is_dir():
        raise NotFoundError(f"{lxc_path}: no such file or directory",
                            hint="give /var/lib/lxc, /var/lib/lxc/NAME or its config file")
    if (lxc_path / "config").is_file():
        return [config_to_entry(lxc_path.name, lxc_path / "config")]
    out = []
    for d in sorted(lxc_path.iterdir()):
        if (d / "config").is_file() and (names is None or d.name in names):
            out.append(config_to_entry(d.name, d / "config"))
    if not out and names is None:
        raise NotFoundError(f"{lxc_path}: no classic LXC container in it (no */config)")
    return out
