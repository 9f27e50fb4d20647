"""Read an inventory file, merge profiles, validate -> Site. The only module that knows YAML.

Steps: read YAML -> per entry, fold `cgroup:` and merge its profile chain -> validate the
whole tree with pydantic in one call -> cross-entry checks (names per connection, cpusets
against the host, networks) -> Site of Entries. Errors name the file, key path and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from virtmix.errors import InventoryError
from virtmix.inventory import sitechecks, strings, uris, walk
from virtmix.inventory.addresses import allocate_guest_addresses
from virtmix.inventory.model import Container, Guest, Inventory
from virtmix.inventory.profiles import ProfileLibrary, deep_merge, fold_cgroup
from virtmix.inventory.site import Entry, Site, Unplaced, guest_lxc_uri
from virtmix.inventory.yamlio import line_of, read_yaml
from virtmix.util import paths
from virtmix.util.gcpause import gc_paused
from virtmix.util.units import format_kib, parse_cpuset

ENTRY_KINDS = {"containers": "container", "guests": "guest"}
MAX_ERRORS = 20  # reported at once; an inventory with more has a systematic problem


def combined(errors: list[InventoryError], unseen: int = 0) -> InventoryError:
    """One error for several: the first as it would be alone, then each further one on its
    own line with its file:line and key path (at most MAX_ERRORS)."""
    unique: list[InventoryError] = []
    seen: set[str] = set()
    for e in errors:
        if e.message not in seen:
            seen.add(e.message)
            unique.append(e)
    first = unique[0]
    if len(unique) == 1:
        return first
    shown = unique[1:MAX_ERRORS]
    more = "\n".join(f"  {p.message}" for p in shown)
    hidden = max(len(unique) - MAX_ERRORS, 0) + unseen
    if hidden:
        more += f"\n  ... and {hidden} more"
    out = InventoryError(f"{first.detail}\nfurther problems:\n{more}",
                         file=first.file, key=first.key, line=first.line, hint=first.hint)
    out.problems = unique  # type: ignore[attr-defined]
    return out


class _Loader:
    """One load of one inventory file; keeps the raw text for error lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.text = ""
        self.raw: dict[str, Any] = {}
        # keypath -> (profile file, profile text) for values that came from a profile
        self.entry_profiles: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.library: ProfileLibrary | None = None
        # keypath -> the entry's own settings (cgroup folded), for `explain`
        self.entry_own: dict[tuple[str, ...], dict[str, Any]] = {}
        self.errors: list[InventoryError] = []  # collected, reported together (MAX_ERRORS)

    def collect(self, check, *args) -> None:
        """Run one check; keep its error and go on, so every problem is reported at once."""
        try:
            check(*args)
        except InventoryError as exc:
            self.errors.append(exc)

    def raise_collected(self, also: InventoryError | None = None) -> None:
        errors = self.errors + ([also] if also is not None else [])
        if errors:
            raise combined(errors)

    def check_raw(self, tree: Any) -> None:
        """Keys that are not strings, control characters, absurd nesting: in the file's own
        data first (so later steps never see them), then in what profiles added."""
        for keypath, message in walk.problems(tree, limit=MAX_ERRORS + 1):
            self.errors.append(self._locate(message, keypath))

    def fail(self, message: str, keypath: tuple[Any, ...], hint: str | None = None):
        key = _keystr(keypath) or None
        raise InventoryError(message, file=self.file, key=key,
                             line=line_of(self.text, keypath), hint=hint)

    # -- reading and merging -------------------------------------------------------------
    def read(self) -> None:
        data, self.text = read_yaml(self.path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("an inventory must be a mapping with 'hosts:' (and optionally "
                      "'networks:', 'profiles_dir:', 'settings:')", ())
        self.raw = data
        dirs = [paths.profiles_dir()]
        extra = data.get("profiles_dir")
        if isinstance(extra, str):
            # A missing directory only adds no profiles (the issue's own example names one
            # a fresh checkout may not have); `validate` warns, an unknown profile says so.
            dirs.append((self.path.parent / extra).resolve())
        self.library = ProfileLibrary(dirs)

    def expand(self) -> dict[str, Any]:
        """The raw tree with every entry's profiles merged in and cgroup keys folded."""
        tree = dict(self.raw)
        for section, kind in ENTRY_KINDS.items():  # entries placement puts on a host
            if isinstance(tree.get(section), dict):
                tree[section] = self._expand_entries(tree[section], kind, (section,))
        hosts = tree.get("hosts")
        if not isinstance(hosts, dict):
            return tree
        new_hosts: dict[str, Any] = {}
        for hname, host in hosts.items():
            if isinstance(host, dict):
                host = dict(host)
                for section, kind in ENTRY_KINDS.items():
                    if isinstance(host.get(section), dict):
                        host[section] = self._expand_entries(
                            host[section], kind, ("hosts", hname, section))
            new_hosts[hname] = host
        tree["hosts"] = new_hosts
        return tree

    def _expand_entries(self, entries: dict, kind: str, where: tuple[str, ...]) -> dict:
        out = {}
        for name, entry in entries.items():
            keypath = (*where, name)
            out[name] = self._expand_one(entry, kind, keypath)
        return out

    def _expand_one(self, entry: Any, kind: str, keypath: tuple[str, ...]) -> Any:
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            return entry  # pydantic reports the type
        if kind == "container":
            for bad in ("containers", "guests"):
                if bad in entry:
                    what = "a container" if bad == "containers" else "a KVM guest"
                    self.fail(f"{what} cannot live inside a container; containers can live "
                              "on a host or inside a KVM guest", (*keypath, bad))
        elif "guests" in entry:
            self.fail("a KVM guest cannot contain KVM guests (nested KVM is not supported); "
                      "declare it under the host's guests:", (*keypath, "guests"))
        keystr = ".".join(keypath)
        own = fold_cgroup(entry, file=self.file, keypath=keystr, text=self.text, at=keypath)
        if kind == "guest" and isinstance(own.get("containers"), dict):
            own = dict(own)
            own["containers"] = self._expand_entries(
                own["containers"], "container", (*keypath, "containers"))
        self.entry_own[keypath] = own
        profile = own.get("profile")
        if profile is None:
            return own
        if not isinstance(profile, str):
            return own
        assert self.library is not None
        try:
            base, chain = self.library.resolve(profile, kind,
                                               used_at=(self.file, f"{keystr}.profile"))
        except InventoryError as exc:
            if exc.file == self.file and exc.line is None:
                self.fail(exc.detail, (*keypath, "profile"))
            raise
        self.entry_profiles[keypath] = chain
        return deep_merge(base, own)

    # -- validation ------------------------------------------------------------------------
    def validate(self, tree: dict[str, Any], context: dict[str, Any]) -> Inventory:
        try:
            return Inventory.model_validate(tree, context=context)
        except ValidationError as exc:
            problems = self._translate(exc, tree)
            raise combined(problems, max(exc.error_count() - MAX_ERRORS, 0)) from None
        except RecursionError:
            raise InventoryError("the inventory is nested too deeply", file=self.file) from None

    def _translate(self, exc: ValidationError, tree: dict[str, Any]) -> list[InventoryError]:
        problems = []
        already = {e.key for e in self.errors}
        for err in exc.errors(include_url=False)[:MAX_ERRORS]:
            keypath = self._real_keypath(tree, err["loc"])
            problem = self._describe(err, keypath)
            if problem.key not in already:  # the raw check said it first (control chars)
                problems.append(problem)
        return self.errors + problems

    @staticmethod
    def _real_keypath(tree: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
        """Drop pydantic's union tags from an error location, keeping real keys only."""
        out: list[Any] = []
        node = tree
        for part in loc:
            if part == "[key]":  # pydantic's mark for an error in a mapping's key itself
                continue
            if isinstance(node, dict) and part in node:
                node = node[part]
                out.append(part)
            elif isinstance(node, dict) and str(part) in node:
                node = node[str(part)]
                out.append(str(part))
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
                out.append(part)
            elif isinstance(node, dict | list):
                # A key the model wanted but the data lacks, or a union branch tag.
                if not (isinstance(part, str) and part in ("path", "build", "function-after")):
                    out.append(part)
                    node = None
            else:
                continue
        return tuple(out)

    def _describe(self, err: dict[str, Any], keypath: tuple[Any, ...]) -> InventoryError:
        kind = err["type"]
        if kind == "extra_forbidden":
            key = keypath[-1] if keypath else "?"
            msg = f"unknown key {strings.shown(key)}"
            allowed = self._allowed_keys(keypath[:-1])
            # (difflib is quadratic: no suggestion for a key no field name is near)
            close = difflib.get_close_matches(str(key), allowed, n=1) \
                if allowed and len(str(key)) <= 64 else []
            if close:
                msg += f"; did you mean {close[0]!r}?"
            elif allowed:
                msg += f" (expected one of: {', '.join(sorted(allowed))})"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {strings.shown(err['input'])})"
        return self._locate(msg, keypath)

    def _locate(self, msg: str, keypath: tuple[Any, ...]) -> InventoryError:
        """Point at the entry's own line, or at the profile file the value came from."""
        line = line_of(self.text, keypath)
        in_entry = self._present(self.raw, keypath)
        if not in_entry:
            for n in range(len(keypath), 0, -1):
                chain = self.entry_profiles.get(tuple(keypath[:n]))
                if chain is None:
                    continue
                rest = tuple(keypath[n:])
                assert self.library is not None
                for pname in chain:
                    prof = self.library.get(pname, used_at=(self.file, ""))
                    if self._present(prof.settings, rest):
                        key = _keystr(rest)
                        return InventoryError(
                            f"{msg} (from profile {pname!r}, used by "
                            f"{'.'.join(str(k) for k in keypath[:n])})",
                            file=str(prof.path), key=key, line=line_of(prof.text, rest))
                break
        key = _keystr(keypath) or None
        return InventoryError(msg, file=self.file, key=key, line=line)

    @staticmethod
    def _present(tree: Any, keypath: tuple[Any, ...]) -> bool:
        node = tree
        for part in keypath:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return False
        return True

    @staticmethod
    def _allowed_keys(keypath: tuple[Any, ...]) -> list[str]:
        """Field names of the model(s) at `keypath`, for did-you-mean suggestions."""
        nodes: list[Any] = [Inventory]
        for part in keypath:
            nxt: list[Any] = []
            for node in nodes:
                if _is_model(node):
                    f = node.model_fields.get(str(part))
                    if f is not None:
                        nxt += _expand_annotation(f.annotation)
                else:  # a dict or list annotation: `part` is a key or an index
                    args = get_args(node)
                    if args:
                        nxt += _expand_annotation(args[-1])
            nodes = nxt
        keys: set[str] = set()
        for node in nodes:
            if _is_model(node):
                keys |= set(node.model_fields)
        return sorted(keys)


def _keystr(keypath: tuple[Any, ...]) -> str:
    """A key path for a message; a hostile key of megabytes is cut short."""
    return ".".join(str(k) if len(str(k)) <= 80 else str(k)[:60] + "..." for k in keypath)


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def _expand_annotation(annotation: Any) -> list[Any]:
    """Models and dict/list annotations inside Optional/Union/Annotated wrappers."""
    out: list[Any] = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        origin = get_origin(a)
        if _is_model(a) or origin in (dict, list):
            out.append(a)
        elif origin is not None:
            stack.extend(x for x in get_args(a) if not isinstance(x, str | int | float))
    return out


def load_site(path: str | Path, *, allow_uri_commands: bool | None = None,
              connecting: bool = True,
              on_entries: Callable[[Site], None] | None = None) -> Site:
    """Load and validate an inventory file into a Site, or raise InventoryError (all its
    problems, up to MAX_ERRORS, each with file:line and key path).

    `allow_uri_commands` (default: the CLI's --allow-uri-commands) lets URIs that choose a
    command to run (ext transport, ssh command=/socket=, a host starting with '-') through.
    `connecting=False` (validate, render, explain: nothing connects) lets an `ext` URI
    through with a warning, since its command only runs on connection.

    Pure: nothing is registered or opened. Code that connects to the site's domains loads
    it with virtmix.nesting.guests.open_site, which also routes the guests' libvirt URIs
    through virtmix's ssh setup.

    `on_entries(site)` is called once the entries exist, before the site-wide checks and
    warnings (which only read the site): validate forks its renderers there.
    """
    if allow_uri_commands is None:
        allow_uri_commands = uris.ALLOW_URI_COMMANDS
    with gc_paused():
        loader = _Loader(Path(path))
        loader.read()
        loader.check_raw(loader.raw)
        loader.raise_collected()  # later steps assume string keys and sane depth
        try:
            tree = loader.expand()
        except InventoryError as exc:
            loader.raise_collected(exc)
            raise
        loader.check_raw(_profile_values(loader, tree))
        inventory = loader.validate(tree, {"allow_uri_commands": allow_uri_commands,
                                           "allow_ext": allow_uri_commands or not connecting,
                                           "base_dir": str(loader.path.resolve().parent)})
        loader.raise_collected()
        loader.collect(allocate_guest_addresses, inventory, loader.fail)
        loader.raise_collected()  # entries' URIs use the picked addresses
        site = Site(path=loader.path.resolve(), inventory=inventory, profiles=loader.library,
                    own_settings={".".join(k): v for k, v in loader.entry_own.items()})
        site.entries = _entries(inventory, loader)
        site.unplaced = _unplaced(inventory, loader)
        if on_entries is not None:
            # validate starts rendering here, beside the site-wide checks below (a failed
            # check discards it: virtmix.render.templates.EarlyRender)
            on_entries(site)
        _check_site(site, loader)
        loader.collect(_check_placement, site, loader)
        loader.raise_collected()
        site.warnings = sitechecks.warnings(site)
    return site


def _entries(inv: Inventory, loader: _Loader) -> list[Entry]:
    entries: list[Entry] = []
    for hname, host in inv.hosts.items():
        for gname, guest in host.guests.items():
            kp = ("hosts", hname, "guests", gname)
            entries.append(Entry(gname, "guest", hname, host.uri, guest,
                                 profiles=loader.entry_profiles.get(kp, ()),
                                 keypath=".".join(kp)))
            if guest.containers:
                uri = guest_lxc_uri(gname, guest)
                for cname, c in guest.containers.items():
                    ckp = (*kp, "containers", cname)
                    entries.append(Entry(cname, "container", hname, uri, c, parent=gname,
                                         profiles=loader.entry_profiles.get(ckp, ()),
                                         keypath=".".join(ckp)))
        for cname, c in host.containers.items():
            kp = ("hosts", hname, "containers", cname)
            entries.append(Entry(cname, "container", hname, host.lxc_uri, c,
                                 profiles=loader.entry_profiles.get(kp, ()),
                                 keypath=".".join(kp)))
    return entries


PLACEMENT_KEYS = ("host", "hosts", "group")


def _unplaced(inv: Inventory, loader: _Loader) -> list[Unplaced]:
    """The top-level containers:/guests: entries, with the hosts each may go to.

    `hosts:` names hosts or host groups (a group stands for its members); `group: G` is
    the same as `hosts: [G]`; `host: auto` (or no key) means every host; `host: NAME` one.
    A placed entry on an inventory network can only go to that network's host."""
    groups: dict[str, list[str]] = {}
    for hname, host in inv.hosts.items():
        if host.group is not None:
            groups.setdefault(host.group, []).append(hname)
    out: list[Unplaced] = []
    resolved: dict[tuple[str, ...], tuple[str, ...]] = {}
    for section, kind in ENTRY_KINDS.items():
        entries: dict[str, Container | Guest] = getattr(inv, section)
        for name, spec in entries.items():
            kp = (section, name)
            given = [k for k in PLACEMENT_KEYS if k in spec.model_fields_set
                     and getattr(spec, k) not in (None, [])]
            if len(given) > 1:
                loader.fail(f"say where it may go with one of host:, hosts: or group:, not "
                            f"{' and '.join(given)}", (*kp, given[1]))
            if spec.hosts:
                names, key = list(spec.hosts), "hosts"
            elif spec.group is not None:
                names, key = [spec.group], "group"
            elif spec.host not in (None, "auto"):
                names, key = [str(spec.host)], "host"
            else:
                names, key = list(inv.hosts), "host"
            key_names = tuple(names)
            if key_names in resolved:  # 10,000 entries saying host: auto resolve it once
                candidates = list(resolved[key_names])
                names = []
            else:
                candidates = []
            for i, n in enumerate(names):
                if n in inv.hosts and n in groups:
                    loader.fail(f"{n!r} is both a host and a host group; rename one",
                                (*kp, key, i) if key == "hosts" else (*kp, key))
                members = [n] if n in inv.hosts else groups.get(n)
                if members is None:
                    known = sorted(inv.hosts) + sorted(groups)
                    close = difflib.get_close_matches(n, known, n=1)
                    where = (*kp, key, i) if key == "hosts" else (*kp, key)
                    loader.fail(f"{n!r} is neither a host nor a host group of this inventory"
                                + (f"; did you mean {close[0]!r}?" if close else
                                   f" (hosts: {', '.join(sorted(inv.hosts)) or 'none'}"
                                   + (f"; groups: {', '.join(sorted(groups))}" if groups
                                      else "") + ")"), where)
                candidates += [m for m in members if m not in candidates]
            if names:
                resolved[key_names] = tuple(candidates)
            for i, iface in enumerate(spec.interfaces):
                if iface.network is None:
                    continue
                net = inv.networks.get(iface.network)
                if net is None:
                    loader.fail(f"network {iface.network!r} is not declared under networks: "
                                "(for an existing host bridge use 'bridge:')",
                                (*kp, "interfaces", i, "network"))
                if net.host not in candidates:
                    loader.fail(f"network {iface.network!r} lives on {net.host!r}, which is "
                                f"not among the hosts this entry may go to "
                                f"({', '.join(candidates) or 'none'})",
                                (*kp, "interfaces", i, "network"))
                candidates = [net.host]
            if not candidates:
                loader.fail("there is no host to place it on: declare hosts under hosts:",
                            (*kp, key))
            policy = spec.placement or inv.settings.placement
            nested: dict[str, tuple[str, ...]] = {}
            if isinstance(spec, Guest):
                nested = {c: loader.entry_profiles.get((*kp, "containers", c), ())
                          for c in spec.containers}
            out.append(Unplaced(name, "guest" if kind == "guest" else "container", spec,
                                tuple(candidates), policy,
                                profiles=loader.entry_profiles.get(kp, ()),
                                keypath=".".join(kp), nested_profiles=nested))
    return out


def _check_placement(site: Site, loader: _Loader) -> None:
    """Placement keys only where placement acts, unique names for placed entries, and no
    two fixed entries of one anti-affinity group on one host."""
    for e in site.entries:
        kp = tuple(e.keypath.split("."))
        for key in PLACEMENT_KEYS:
            if key in e.spec.model_fields_set and getattr(e.spec, key) not in (None, []):
                loader.fail(f"'{key}:' chooses a host for entries of the top-level "
                            "containers:/guests: sections; this entry already lives on "
                            f"host {e.host!r}", (*kp, key))
    names = {e.name: e.keypath for e in site.entries}
    for u in site.unplaced:
        kp = tuple(u.keypath.split("."))
        if u.name in names:
            loader.fail(f"name {u.name!r} is also used at {names[u.name]}; an entry placement "
                        "puts on a host needs a name of its own in the inventory", kp)
        names[u.name] = u.keypath
        if isinstance(u.spec, Guest):
            for cname, c in u.spec.containers.items():
                ckp = (*kp, "containers", cname)
                for key in PLACEMENT_KEYS:
                    if key in c.model_fields_set and getattr(c, key) not in (None, []):
                        loader.fail(f"'{key}:' is not for containers inside a guest: they "
                                    "live in their guest", (*ckp, key))
                for key, cpuset in (("cpuset", c.cpu.cpuset),):
                    if cpuset and max(parse_cpuset(cpuset)) >= u.spec.vcpus:
                        loader.fail(f"cpuset {cpuset!r} names CPU {max(parse_cpuset(cpuset))}"
                                    f", which guest {u.name!r} ({u.spec.vcpus} vcpus) does "
                                    "not have", (*ckp, "cpu", key))
    seen: dict[tuple[str, str], str] = {}
    for e in site.entries:
        group = e.spec.anti_affinity
        if group is None or e.parent:
            continue
        other = seen.get((e.host, group))
        if other is not None:
            loader.fail(f"anti_affinity {group!r}: {e.name} and {other} both live on host "
                        f"{e.host!r}", (*e.keypath.split("."), "anti_affinity"))
        seen[(e.host, group)] = e.name


def _profile_values(loader: _Loader, tree: dict[str, Any]) -> dict[str, Any]:
    """The parts of the expanded tree that came from profiles (the file's own were checked):
    only entries with a profile chain, so a large inventory is not walked twice."""
    if not loader.entry_profiles:
        return {}
    out: dict[str, Any] = {}
    for keypath in loader.entry_profiles:
        node: Any = tree
        for part in keypath:
            node = node.get(part) if isinstance(node, dict) else None
        cursor = out
        for part in keypath[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[keypath[-1]] = node
    return out


def _check_site(site: Site, loader: _Loader) -> None:
    inv = site.inventory
    seen: dict[tuple[str, str], Entry] = {}
    for e in site.entries:
        kp = tuple(e.keypath.split("."))
        daemon = uris.canonical(e.uri)
        other = seen.get((daemon, e.name))
        if other is not None:
            same = "" if other.uri == e.uri else f", which is {other.uri} under another spelling"
            loader.collect(loader.fail, f"domain name {e.name!r} is used twice on connection "
                           f"{e.uri}{same} (also at {other.keypath})", kp)
        seen[(daemon, e.name)] = e
        loader.collect(_check_cpu, site, e, kp, loader)
        loader.collect(_check_memory, site, e, kp, loader)
        loader.collect(_check_interfaces, site, e, kp, loader)
        if e.kind == "guest" and e.spec.containers and not e.spec.lxc_uri and not any(
                i.ipv4 for i in e.spec.interfaces):
            loader.collect(
                loader.fail, "a guest that hosts containers needs a known address so virtmix "
                "can reach its libvirt: an interface on an inventory network with an ipv4 "
                "(virtmix then picks the guest's address), a static 'ipv4', or 'lxc_uri'",
                (*kp, "interfaces"))
        if len(loader.errors) > MAX_ERRORS:
            return
    loader.collect(_check_idmaps, site, loader)
    guests = {e.name for e in site.entries if e.kind == "guest"}  # once, not per network
    for nname, net in inv.networks.items():
        if net.host not in inv.hosts and net.host not in guests:
            loader.collect(loader.fail, f"network host {net.host!r} is not a host (or guest) "
                           "of this inventory", ("networks", nname, "host"))
    for message, keypath in sitechecks.conflicts(site):
        loader.collect(loader.fail, message, keypath)


def _check_idmaps(site: Site, loader: _Loader) -> None:
    """Explicit `idmap:` ranges: not on a privileged container, and no two overlapping in one
    id space (a host, or a guest for its nested containers)."""
    from virtmix.util.idranges import overlaps

    seen: dict[str, list[tuple[tuple[int, int, int, int], Entry]]] = {}
    for e in site.entries:
        if e.kind != "container" or e.spec.idmap is None:
            continue
        kp = (*e.keypath.split("."), "idmap")
        if "privileged" in e.spec.model_fields_set and e.spec.privileged:
            loader.fail("a privileged container has no id map; remove idmap or privileged",
                        kp)
        m = e.spec.idmap.as_tuple
        space = f"guest {e.parent}" if e.parent else f"host {e.host}"
        for other_map, other in seen.get(space, []):
            if overlaps(m, other_map):
                loader.fail(f"ids {m[1]}..{m[1] + m[2] - 1} (gid {m[3]}..) overlap those of "
                            f"{other.keypath} on {space}: root in one would own the other's "
                            "files", kp)
        seen.setdefault(space, []).append((m, e))


def _check_cpu(site: Site, e: Entry, kp: tuple[str, ...], loader: _Loader) -> None:
    cpu = e.spec.cpu
    if e.kind == "container":
        if cpu.vcpupin:
            loader.fail("vcpupin is not available for containers: libvirt's LXC driver has no "
                        "vCPU threads to pin; use cpu.cpuset (or cgroup cpuset.cpus)",
                        (*kp, "cpu", "vcpupin"))
        if cpu.emulatorpin:
            loader.fail("emulatorpin is not available for containers (libvirt's LXC driver "
                        "has no emulator thread); use cpu.cpuset", (*kp, "cpu", "emulatorpin"))
    if e.parent:
        guest = site.inventory.hosts[e.host].guests[e.parent]
        allowed, what = frozenset(range(guest.vcpus)), f"guest {e.parent!r} ({guest.vcpus} vcpus)"
    else:
        host = site.inventory.hosts[e.host]
        if host.cpus is None:
            return
        allowed, what = parse_cpuset(host.cpus), f"host {e.host!r} (cpus: {host.cpus})"
    checks = [(("cpu", "cpuset"), cpu.cpuset), (("cpu", "emulatorpin"), cpu.emulatorpin)]
    checks += [(("cpu", "vcpupin", v), s) for v, s in cpu.vcpupin.items()]
    for key, cpuset in checks:
        if cpuset is None:
            continue
        extra = parse_cpuset(cpuset) - allowed
        if extra:
            loader.fail(f"cpuset {cpuset!r} names CPU {min(extra)}, which {what} does not have",
                        (*kp, *key))
    for v in cpu.vcpupin:
        if v >= e.spec.vcpus:
            loader.fail(f"vcpupin names vCPU {v}, but the guest has {e.spec.vcpus} vcpus",
                        (*kp, "cpu", "vcpupin", v))


def _check_memory(site: Site, e: Entry, kp: tuple[str, ...], loader: _Loader) -> None:
    """Like cpus: a declared host (or guest) memory bounds one domain's memory. Containers
    share the kernel and overcommit by design, so only a guest that could never boot there
    (or a container capped above its guest) is refused; sums are the admin's call."""
    if e.parent:
        outer, what = site.inventory.hosts[e.host].guests[e.parent].memory, f"guest {e.parent!r}"
    else:
        outer, what = site.inventory.hosts[e.host].memory, f"host {e.host!r}"
    if outer is not None and e.spec.memory is not None and e.spec.memory > outer:
        loader.fail(f"memory {format_kib(e.spec.memory)} is more than {what} has "
                    f"({format_kib(outer)})", (*kp, "memory"))


def _check_interfaces(site: Site, e: Entry, kp: tuple[str, ...], loader: _Loader) -> None:
    nets = site.inventory.networks
    expected_host = e.parent or e.host
    for i, iface in enumerate(e.spec.interfaces):
        if iface.network is None:
            continue
        net = nets.get(iface.network)
        if net is None:
            if e.parent:
                continue  # a network of the guest's own libvirt
            close = difflib.get_close_matches(iface.network, list(nets), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            loader.fail(f"network {iface.network!r} is not declared under networks:{hint} "
                        "(for an existing host bridge use 'bridge:')",
                        (*kp, "interfaces", i, "network"))
        if net.host != expected_host:
            loader.fail(f"network {iface.network!r} lives on {net.host!r}, not on "
                        f"{expected_host!r}", (*kp, "interfaces", i, "network"))
        if iface.ipv4 is not None and net.ipv4 is not None:
            subnet: IPv4Network = net.ipv4.network
            if iface.ipv4.ip not in subnet:
                loader.fail(f"address {iface.ipv4} is outside network {iface.network!r} "
                            f"({subnet})", (*kp, "interfaces", i, "ipv4"))


__all__ = ["load_site", "guest_lxc_uri", "Container", "Guest"]
