"""The resolved site: every domain of the inventory as an Entry, addressed by name or GUEST/NAME."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from virtmix.errors import NotFoundError, UsageError
from virtmix.inventory.model import Container, Guest, Host, Inventory, Network, RootfsPath
from virtmix.util.suggest import did_you_mean

DEFAULT_MEMORY_KIB = {"container": 512 * 1024, "guest": 1024 * 1024}


@dataclass(frozen=True)
class Entry:
    """One domain the inventory asks for, with where it lives."""

    name: str
    kind: Literal["container", "guest"]
    host: str                 # the inventory host it belongs to (for nested: the guest's host)
    uri: str                  # the libvirt connection it is defined on
    spec: Container | Guest
    parent: str | None = None  # the guest that hosts a nested container
    profiles: tuple[str, ...] = ()  # profile chain, nearest first
    keypath: str = ""         # where it sits in the inventory, e.g. hosts.hv1.containers.vm0
    placed: str = ""          # policy that placed it (spread|pack), recorded in its metadata
    placed_why: str = ""      # why placement chose this host, for plan (new placements only)

    @property
    def address(self) -> str:
        """How an admin names it on the command line: NAME, or GUEST/NAME when nested."""
        return f"{self.parent}/{self.name}" if self.parent else self.name

    @property
    def memory_kib(self) -> int:
        return self.spec.memory or DEFAULT_MEMORY_KIB[self.kind]


@dataclass(frozen=True)
class Unplaced:
    """An entry of the top-level containers:/guests: sections: its host is chosen by
    placement (virtmix.converge.placement) from `candidates`, once hosts were read."""

    name: str
    kind: Literal["container", "guest"]
    spec: Container | Guest
    candidates: tuple[str, ...]   # inventory hosts it may go to, in inventory order
    policy: str                   # spread | pack
    profiles: tuple[str, ...] = ()
    keypath: str = ""
    nested_profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def memory_kib(self) -> int:
        return self.spec.memory or DEFAULT_MEMORY_KIB[self.kind]

    def uri_on(self, host: Host) -> str:
        return host.lxc_uri if self.kind == "container" else host.uri

    def entries_on(self, hname: str, host: Host, *, placed: str = "",
                   why: str = "") -> list[Entry]:
        """Its Entry on host `hname` (and the entries of the containers a guest holds)."""
        me = Entry(self.name, self.kind, hname, self.uri_on(host), self.spec,
                   profiles=self.profiles, keypath=self.keypath, placed=placed, placed_why=why)
        out = [me]
        if isinstance(self.spec, Guest) and self.spec.containers:
            uri = guest_lxc_uri(self.name, self.spec)
            for cname, c in self.spec.containers.items():
                out.append(Entry(cname, "container", hname, uri, c, parent=self.name,
                                 profiles=self.nested_profiles.get(cname, ()),
                                 keypath=f"{self.keypath}.containers.{cname}"))
        return out


def guest_lxc_uri(name: str, guest: Guest) -> str:
    """How virtmix reaches the libvirt inside a guest: lxc_uri, or ssh to its static address."""
    if guest.lxc_uri:
        return guest.lxc_uri
    for iface in guest.interfaces:
        if iface.ipv4 is not None:
            return f"lxc+ssh://root@{iface.ipv4.ip}/system"
    return f"lxc+ssh://root@{name}/system"


@dataclass
class Site:
    """A loaded, validated inventory."""

    path: Path
    inventory: Inventory
    entries: list[Entry] = field(default_factory=list)
    profiles: Any = None  # the ProfileLibrary the entries were merged with
    own_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # keypath -> own keys
    warnings: list[str] = field(default_factory=list)  # legal but dangerous settings
    # Entries whose host placement chooses; placement moves them into `entries`.
    unplaced: list[Unplaced] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The site's identity: `site:` (or its older spelling `name:`), else the file's stem.

        Ownership hangs on this name, never on the file's path, so moving the inventory
        changes nothing it owns; the path is recorded in metadata as information only."""
        return self.inventory.site or self.inventory.name or self.path.stem

    @property
    def networks(self) -> dict[str, Network]:
        return self.inventory.networks

    def provisional(self) -> Site:
        """This site with each unplaced entry as on its first candidate host, for the
        commands that read no host (validate, render, explain): the documents are the same
        wherever placement puts it, except host, URI and UUID. plan says where it goes."""
        if not self.unplaced:
            return self
        entries = list(self.entries)
        for u in self.unplaced:
            first = u.candidates[0]
            entries += u.entries_on(first, self.inventory.hosts[first])
        return replace(self, entries=entries, unplaced=[])

    def by_uri(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = defaultdict(list)
        for e in self.entries:
            out[e.uri].append(e)
        return dict(out)

    def find(self, name: str) -> Entry:
        """Find an entry by NAME or GUEST/NAME; an ambiguous bare name is a usage error."""
        if "/" in name:
            parent, _, leaf = name.partition("/")
            hits = [e for e in self.entries if e.name == leaf and e.parent == parent]
        else:
            hits = [e for e in self.entries if e.name == name]
        if not hits:
            names = [e.address for e in self.entries] + [e.name for e in self.entries]
            raise NotFoundError(f"no entry named {name!r} in {self.path}"
                                + did_you_mean(name, names))
        if len(hits) > 1:
            where = ", ".join(e.address if e.parent else f"{e.name} on {e.host}" for e in hits)
            raise UsageError(f"{name!r} is ambiguous in {self.path}: {where}; use GUEST/NAME")
        return hits[0]

    def children(self, guest: str) -> list[Entry]:
        return [e for e in self.entries if e.parent == guest]


def is_privileged(entry: Entry) -> bool:
    """Built trees run unprivileged unless asked; a given tree is used as it is (privileged),
    unless the entry says `privileged: false` (the tree is already shifted to the idmap)."""
    spec = entry.spec
    assert isinstance(spec, Container)
    if "privileged" in spec.model_fields_set:
        return spec.privileged
    if spec.idmap is not None:
        return False  # an explicit id range asks for a user namespace
    return isinstance(spec.rootfs, RootfsPath)
