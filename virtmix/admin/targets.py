"""Which libvirt connections the admin verbs use, and finding a domain by NAME or GUEST/NAME.

Without -c (and without $LIBVIRT_DEFAULT_URI) the verbs look at both local drivers,
lxc:///system and qemu:///system. -c URI limits them to that URI, as with virsh. An inventory
(-i) adds every inventory host's URIs and, for guests that host containers, the guest's own
libvirt (how nested containers are reached), and names the hosts as the inventory does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from virtmix.backend import DomainRecord, open_connection
from virtmix.backend.protocol import Backend
from virtmix.errors import BackendError, NotFoundError, StateError, UsageError
from virtmix.util.suggest import did_you_mean

LOCAL_URIS = ("lxc:///system", "qemu:///system")


@dataclass(frozen=True)
class Place:
    """One libvirt connection the verbs look at, and what it is in the site."""

    uri: str
    host: str
    parent: str | None = None  # the guest whose libvirt this is (nested containers)


@dataclass
class Target:
    """A domain found by name: where it is and what libvirt reports about it."""

    place: Place
    conn: Backend
    record: DomainRecord

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def address(self) -> str:
        return f"{self.place.parent}/{self.name}" if self.place.parent else self.name

    def refresh(self) -> Target:
        self.record = self.conn.get(self.name)
        return self

    def need_running(self, verb: str) -> None:
        if self.record.state not in ("running", "paused", "blocked"):
            raise StateError(f"{verb}: {self.address} is {self.record.state} on "
                             f"{self.place.uri}; it must be running",
                             hint=f"start it first: virtmix start {self.address}")

    def need_container(self, verb: str) -> None:
        if self.record.kind != "lxc":
            raise UsageError(f"{verb}: {self.address} is a KVM guest; {verb} works on "
                             "LXC containers only")


# The spellings of the local system daemon's two drivers.
_LOCAL_SPELLINGS = {"lxc:///system", "qemu:///system", "lxc:///", "qemu:///", "lxc://",
                    "qemu://"}


def env_limit() -> str | None:
    """The URI $LIBVIRT_DEFAULT_URI limits the admin verbs to, or None.

    virtmix manages containers and guests side by side, so a variable that only picks
    virsh's default driver on this machine (`qemu:///system`, `lxc:///`) does not hide the
    other driver: `ls` still lists both and `info CONTAINER` finds it. Any other URI (a
    remote host, a session daemon, test:///) is what the admin asked for: the verbs use it
    alone, and `ls` says so."""
    env = os.environ.get("LIBVIRT_DEFAULT_URI")
    if not env or env in _LOCAL_SPELLINGS:
        return None
    return env


def host_of(uri: str) -> str:
    return urlsplit(uri).hostname or "localhost"


@dataclass
class Session:
    """The connections of one command, opened on first use and closed by close()."""

    connect: str | None = None
    inventory: str | None = None
    warnings: list[str] = field(default_factory=list)
    _conns: dict[str, Backend] = field(default_factory=dict)
    _site: object = None
    _found_sites: list | None = None  # inventories recorded by local guests (no -i)
    unreachable: dict[str, str] = field(default_factory=dict)  # uri -> why it did not answer

    # -- where to look -------------------------------------------------------------------
    @property
    def site(self):
        if self._site is None and self.inventory:
            from virtmix.nesting.guests import open_site as load_site

            self._site = load_site(Path(self.inventory))
        return self._site

    def places(self) -> list[Place]:
        found: dict[str, Place] = {}
        if self.site is not None:
            for hname, host in self.site.inventory.hosts.items():
                for uri in (host.uri, host.lxc_uri):
                    found.setdefault(uri, Place(uri, hname))
            for entry in self.site.entries:
                if entry.parent:
                    found.setdefault(entry.uri, Place(entry.uri, entry.host, entry.parent))
        if self.connect:
            return [found.get(self.connect, Place(self.connect, host_of(self.connect)))]
        if found:
            return list(found.values())
        env = env_limit()
        base = [Place(u, host_of(u)) for u in ([env] if env else LOCAL_URIS)]
        for site in self.found_sites():
            for entry in site.entries:
                if entry.parent and entry.uri not in {p.uri for p in base}:
                    base.append(Place(entry.uri, entry.host, entry.parent))
        return base

    def found_sites(self) -> list:
        """Without -i: the inventories that virtmix's guests on the local daemons record in
        their metadata (apply writes `inventory` and `site` there), so nested containers
        are reached as with -i. A recorded file that is gone or invalid is a warning."""
        if self._found_sites is not None:
            return self._found_sites
        self._found_sites = []
        if self.inventory or self.connect:
            return self._found_sites
        from virtmix.errors import VirtmixError
        from virtmix.nesting.guests import open_site

        env = env_limit()
        seen: dict[str, str] = {}
        for uri in ([env] if env else LOCAL_URIS):
            try:
                conn = self.conn(Place(uri, host_of(uri)))
                # Only guests record inventories: the LXC driver's 2,000 containers are
                # not read (each record is a round trip for its definition).
                records = [] if conn.driver == "lxc" else conn.list_domains()
            except BackendError:
                continue  # reachable() reports it
            for rec in records:
                meta = rec.metadata or {}
                if rec.kind == "kvm" and meta.get("inventory") and not meta.get("parent"):
                    seen.setdefault(meta["inventory"], rec.name)
        for path, guest in seen.items():
            try:
                site = open_site(Path(path))
            except VirtmixError as exc:
                self.warnings.append(f"guest {guest} was made from inventory {path}, which "
                                     f"cannot be read now ({exc.message}); its nested "
                                     "containers are not shown (give -i INVENTORY)")
                continue
            if any(e.parent == guest for e in site.entries):
                self._found_sites.append(site)
        return self._found_sites

    def _limited(self) -> str:
        env = None if self.connect or self.site is not None else env_limit()
        return (f" (only $LIBVIRT_DEFAULT_URI={env} is searched; -c URI chooses another)"
                if env else "")

    def conn(self, place: Place) -> Backend:
        if place.uri not in self._conns:
            self._conns[place.uri] = open_connection(place.uri)
        return self._conns[place.uri]

    @property
    def connections(self) -> dict[str, Backend]:
        """The connections opened so far, by URI (whoever takes them closes them)."""
        return dict(self._conns)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    # -- listing and finding -------------------------------------------------------------
    def reachable(self) -> list[tuple[Place, object]]:
        """(place, connection) for every place that answers; the others become warnings.

        When none answers, the first failure is the command's (exit 5); a nested guest
        that is stopped is normal and only noted.
        """
        places = self.places()
        out, failures = [], []
        for place in places:
            try:
                out.append((place, self.conn(place)))
            except BackendError as exc:
                failures.append(exc)
                self.unreachable[place.uri] = exc.message
        if not out and failures:
            raise failures[0]  # nothing answers: the command cannot do anything
        self.warnings += [str(exc) for exc in failures]
        return out

    def records(self) -> list[tuple[Place, object, DomainRecord]]:
        rows = []
        for place, conn in self.reachable():
            rows.extend((place, conn, rec) for rec in conn.list_domains())
        return rows

    def find(self, name: str) -> Target:
        """The domain NAME (any connection in use) or GUEST/NAME (needs an inventory)."""
        return next(self.find_each([name]))

    def find_each(self, names: list[str]) -> Iterator[Target]:
        """find() of each name, in order, raising at the first that find() refuses.

        Many names are found with one domain listing per connection, not one lookup per
        name and connection: `destroy` of 1,000 names among 2,000 domains spent a minute
        in lookups alone. The listing is made when the first bare name comes up, so the
        errors come in the order of the names, as with find() of each."""
        found: dict[str, list[Target]] | None = None
        for name in names:
            if "/" in name:
                yield self._find_nested(name)
                continue
            if found is None:
                plain = list(dict.fromkeys(n for n in names if "/" not in n))
                found = {n: [] for n in plain}
                self._find_in(plain, found, nested=False)
                # Then inside the inventory's guests (slower: ssh to each guest's libvirt).
                missing = [n for n in plain if not found[n]]
                if missing:
                    self._find_in(missing, found, nested=True)
            yield self._one(name, found[name])

    def _one(self, name: str, hits: list[Target]) -> Target:
        if not hits:
            where = " or ".join(p.uri for p in self.places())
            raise NotFoundError(f"no domain named {name!r} on {where}"
                                + did_you_mean(name, self._known_names()) + self._limited(),
                                hint="see `virtmix ls`; nested containers are GUEST/NAME "
                                     "with -i INVENTORY")
        if len(hits) > 1 and any(t.place.parent for t in hits):
            raise UsageError(f"{name!r} exists in several places: "
                             f"{', '.join(t.address for t in hits)}; name it GUEST/NAME")
        if len(hits) > 1:
            raise UsageError(f"{name!r} exists on several connections: "
                             f"{', '.join(t.place.uri for t in hits)}; choose one with -c URI")
        return hits[0]

    def _known_names(self) -> list[str]:
        """Names of the domains on the connections already open (for did-you-mean)."""
        names = []
        for conn in list(self._conns.values()):
            try:
                names += [r.name for r in conn.list_domains()]
            except BackendError:
                continue
        return names

    def _find_in(self, names: list[str], found: dict[str, list[Target]], *,
                 nested: bool) -> None:
        """Add to found[name] where each name is, on the host connections or (nested) the
        guests' libvirt: one lookup for one name, one listing per connection for more."""
        for place in self.places():
            if bool(place.parent) != nested:
                continue
            try:
                conn = self.conn(place)
                records = _lookup_all(conn, names)
            except BackendError as exc:
                if place.parent:  # a stopped or unreachable guest: only noted
                    self.warnings.append(str(exc))
                    continue
                if len(self.places()) == 1:
                    raise
                self.warnings.append(str(exc))
                continue
            for name in names:
                if name in records:
                    found[name].append(Target(place, conn, records[name]))

    def _find_nested(self, address: str) -> Target:
        guest, _, leaf = address.partition("/")
        if not guest or not leaf or "/" in leaf:
            raise UsageError(f"{address!r}: expected NAME or GUEST/NAME")
        places = [p for p in self.places() if p.parent == guest]
        if self.site is None and not places:
            raise UsageError(f"{address}: a nested name needs the inventory that says how "
                             f"to reach the guest's libvirt, and no guest named {guest!r} on "
                             "this host records one with containers in it",
                             hint="give the inventory: -i FILE or $VIRTMIX_INVENTORY")
        if not places:
            raise NotFoundError(f"no guest named {guest!r} with containers in "
                                f"{self.site.path}")
        conn = self.conn(places[0])
        return Target(places[0], conn, conn.get(leaf))


def _lookup_all(conn: Backend, names: list[str]) -> dict[str, DomainRecord]:
    """The named domains on conn: a lookup for one name (no listing of every domain), one
    listing for several (Backend.find_domains)."""
    if len(names) == 1:
        try:
            return {names[0]: conn.get(names[0])}
        except NotFoundError:
            return {}
    return conn.find_domains(names)
