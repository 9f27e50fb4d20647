"""`virtmix create`: one container from a template, made by apply's own steps (lxc-create -t).

The command line becomes a one-entry Site in memory (validated by the inventory's models),
then the same steps as apply: prepare (rootfs build/cache/clone/customise), render, define.
There is no inventory file: the domain's metadata says `created-by='create'`, which tells
`virtmix destroy` that the tree belongs to the domain and goes with it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from virtmix.backend.protocol import Backend
from virtmix.domain import metadata, xmlnode
from virtmix.errors import ConflictError, NotFoundError, RootfsError, UsageError, VirtmixError
from virtmix.inventory.model import Container, Host, Inventory, Settings
from virtmix.inventory.rules import check_name
from virtmix.inventory.site import Entry, Site
from virtmix.util.suggest import did_you_mean
from virtmix.util.units import parse_cpuset

CREATED_BY = "create"  # metadata value: the domain owns its tree (destroy deletes it)
HOST = "localhost"     # the one inventory host of the in-memory site
# What each template adds to the base, as lxc-debian did: an admin who attaches finds ps
# and ip (Debian's minbase has neither). Part of the cache key like any package.
TEMPLATE_PACKAGES = {"debian": ("iproute2", "procps")}
TEMPLATES = (*TEMPLATE_PACKAGES, "busybox")  # busybox: virtmix/create_busybox.py

# Where a model error points -> the option the admin typed.
_OPTION_FOR = {"memory": "--memory", "cpu.cpuset": "--cpuset", "cpu.shares": "--shares",
               "interfaces.0.ipv4": "--ipv4", "interfaces.0.gateway": "--gateway",
               "interfaces.0.network": "--network", "interfaces.0.bridge": "--bridge",
               "interfaces.0": "--network/--bridge", "rootfs.suite": "--suite",
               "rootfs.variant": "--variant", "rootfs.packages": "--package",
               "ssh_keys": "--ssh-key", "hostname": "--hostname"}


@dataclass
class CreateRequest:
    """What `virtmix create` was asked for (the command line, parsed)."""

    name: str
    uri: str
    template: str = "debian"
    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    hook: str | None = None
    ssh_keys: tuple[str, ...] = ()
    root_password: bool = False  # True: generated, shown once
    sshd: bool = False
    hostname: str | None = None
    memory: str | None = None
    cpuset: str | None = None
    shares: int | None = None
    network: str | None = None
    bridge: str | None = None
    ipv4: str | None = None
    gateway: str | None = None
    privileged: bool = False
    storage_dir: str | None = None
    mirror: str | None = None
    start: bool = False


@dataclass
class CreateResult:
    """What was made; `password` is the generated root password (shown once, never logged)."""

    name: str
    uri: str
    tree: str
    method: str
    cache_entry: str
    privileged: bool
    password: str | None
    password_file: str | None
    started: bool
    log: Path
    start_error: VirtmixError | None = None  # --start failed: made, but not running
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds

    @property
    def seconds(self) -> float:
        return round(sum(self.steps.values()), 2)


class Report:
    """How the steps are shown: the CLI plugs progress bars in; the log file gets it all."""

    def begin(self, step: str) -> None:
        """A long step starts."""

    def detail(self, text: str) -> None:
        """A line of progress inside the current step (e.g. mmdebstrap's stage)."""

    def end(self, step: str, seconds: float) -> None:
        """The step finished."""


def storage_root(req: CreateRequest) -> str:
    from virtmix.rootfs import Storage

    return str(Storage(req.storage_dir).root)


def _body(req: CreateRequest) -> dict[str, Any]:
    """The container entry, as an inventory would write it."""
    if req.template == "busybox":  # a given tree (made by create_busybox before prepare)
        rootfs: dict[str, Any] = {"path": f"{storage_root(req)}/containers/{req.name}/rootfs"}
    else:
        rootfs = {"distro": "debian", "suite": req.suite, "variant": req.variant,
                  "packages": sorted({*TEMPLATE_PACKAGES[req.template], *req.packages}),
                  "mirror": req.mirror, "hook": req.hook}
    body: dict[str, Any] = {
        "rootfs": rootfs,
        "ssh_keys": list(req.ssh_keys), "sshd": req.sshd,
        "root_password": "generate" if req.root_password else "locked",
        "privileged": req.privileged,
    }
    if req.template == "busybox" and not req.privileged:
        # A given tree to the inventory, but built here: it gets its own id range too.
        from virtmix.hosts import cgroup_version_where
        from virtmix.util.idranges import pick_for

        _s, uid, count, gid = pick_for(req.name, storage_root(req),
                                       cgroup_version=cgroup_version_where(req.uri, None))
        body["idmap"] = {"uid": uid, "gid": gid, "count": count}
    if req.hostname:
        body["hostname"] = req.hostname
    if req.memory is not None:
        body["memory"] = req.memory
    cpu = {k: v for k, v in (("cpuset", req.cpuset), ("shares", req.shares)) if v is not None}
    if cpu:
        body["cpu"] = cpu
    if req.network or req.bridge:
        iface = {k: v for k, v in (("network", req.network), ("bridge", req.bridge),
                                   ("ipv4", req.ipv4), ("gateway", req.gateway)) if v}
        body["interfaces"] = [iface]
    elif req.ipv4 or req.gateway:
        raise UsageError("--ipv4/--gateway need an interface: give --network NET or --bridge BR")
    return body


def _validation_error(exc: ValidationError) -> UsageError:
    first = exc.errors()[0]
    # ("rootfs", "build", "suite"): the middle is the union member's tag, not a key.
    loc = ".".join(str(x) for x in first["loc"] if x not in ("build", "path"))
    option = _OPTION_FOR.get(loc) or _OPTION_FOR.get(loc.rsplit(".", 1)[0], loc)
    msg = first["msg"].removeprefix("Value error, ")
    return UsageError(f"{option}: {msg}")


def locked_root_note(req: CreateRequest) -> str | None:
    """What to tell the admin when the new container's root can log in nowhere: root is
    locked (no --root-password generate) and has no ssh key. None otherwise."""
    if req.template == "busybox" or req.ssh_keys or req.root_password:
        return None
    return (f"root in {req.name} is locked and has no ssh key: nobody can log in (only "
            f"`virtmix attach {req.name}` and `virtmix console {req.name}` reach it as root). "
            f"To log in with a key, create it with --ssh-key FILE (or --ssh-key-text KEY; "
            f"`ssh_keys:` in an inventory entry), or add one now: virtmix attach {req.name} "
            "-- sh -c 'mkdir -p -m 700 /root/.ssh && echo \"ssh-ed25519 AAAA... you@host\" "
            ">> /root/.ssh/authorized_keys'")


def build_site(req: CreateRequest) -> tuple[Site, Entry]:
    """A one-entry Site for the request, validated like an inventory entry (nothing made)."""
    try:
        check_name(req.name)
    except ValueError as exc:
        raise UsageError(f"NAME: {exc}") from None
    if req.template not in TEMPLATES:
        raise UsageError(f"--template {req.template!r}: expected one of {', '.join(TEMPLATES)}"
                         + did_you_mean(req.template, TEMPLATES))
    if req.network and req.bridge:
        raise UsageError("--network and --bridge: give one of them")
    if req.template == "busybox":
        extra = [o for o, v in (("--package", req.packages), ("--hook", req.hook),
                                ("--sshd", req.sshd), ("--mirror", req.mirror)) if v]
        if extra:
            raise UsageError(f"{', '.join(extra)}: not for --template busybox (no packages, "
                             "no sshd: one static busybox)")
    if req.hook and not Path(req.hook).is_file():
        raise UsageError(f"--hook {req.hook}: not a file")
    try:
        container = Container.model_validate(_body(req))
    except ValidationError as exc:
        raise _validation_error(exc) from None
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    try:  # the model checked every value; this reads the hook, before anything is made
        if req.template != "busybox":
            spec_from_model(container.rootfs, mirror=req.mirror)
        setup_from_model(req.name, container)
    except RootfsError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    from virtmix.hosts import cgroup_version_where

    inventory = Inventory(
        name=None, settings=Settings(storage_dir=storage_root(req), mirror=req.mirror),
        hosts={HOST: Host(lxc_uri=req.uri, cgroups=cgroup_version_where(req.uri, None),
                          containers={req.name: container})})
    # The site's path only anchors relative hook paths (the hook is made absolute).
    site = Site(path=Path.cwd() / f"{req.name}.create", inventory=inventory)
    entry = Entry(req.name, "container", HOST, req.uri, container, keypath=req.name)
    site.entries = [entry]
    return site, entry


def mark_created(xml: str, req: CreateRequest) -> str:
    """The rendered definition with create's metadata instead of an inventory's."""
    root = xmlnode.parse(xml)
    metadata.set_created_by(root, CREATED_BY, req.template)
    return xmlnode.to_string(root) + "\n"


# -- checks before anything is made ---------------------------------------------------------
def check_free(conn: Backend, req: CreateRequest, storage: Any) -> None:
    """Refuse (exit 9) an existing domain or tree of that name, an unknown network (6)."""
    try:
        conn.get(req.name)
    except NotFoundError:
        pass
    else:
        raise ConflictError(f"a domain named {req.name!r} already exists on {conn.uri}",
                            hint=f"choose another name, or `virtmix destroy {req.name}` first")
    cdir = storage.container_dir(req.name)
    if os.path.lexists(cdir):
        raise ConflictError(
            f"{cdir} already exists (a container tree without a domain on {conn.uri})",
            hint="if no container uses it: umount its rootfs if mounted, then remove the "
                 "directory; or give another name")
    if req.network and req.network not in {n.name for n in conn.list_networks()}:
        raise NotFoundError(f"--network {req.network}: no such libvirt network on {conn.uri}",
                            hint="see `virsh net-list --all`, or use --bridge BR")
    if req.cpuset and os.cpu_count():
        extra = parse_cpuset(req.cpuset) - frozenset(range(os.cpu_count() or 1))
        if extra:
            raise UsageError(f"--cpuset {req.cpuset}: this host has no CPU {min(extra)} "
                             f"(CPUs 0-{(os.cpu_count() or 1) - 1})")


# -- the log file ----------------------------------------------------------------------------
class CreateLog:
    """STORAGE/logs/create-NAME-TIME.log (0600): every step, its timing, the definition.

    Never given the generated password: only its file's path goes in.
    """

    def __init__(self, storage: Any, name: str) -> None:
        logs = storage.root / "logs"
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = logs / f"create-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._f = os.fdopen(fd, "a", buffering=1)

    def line(self, text: str) -> None:
        self._f.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def close(self) -> None:
        self._f.close()


class _Steps:
    """Times each step and sends it to the report and the log."""

    def __init__(self, report: Report, log: CreateLog) -> None:
        self.report, self.log, self.times = report, log, {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        self.report.begin(name)
        self.log.line(f"step: {name}")
        t0 = time.monotonic()

        def detail(text: str) -> None:
            self.log.line(f"  {text}")
            self.report.detail(text)

        yield detail
        self.times[name] = round(time.monotonic() - t0, 2)
        self.log.line(f"step done: {name} ({self.times[name]} s)")
        self.report.end(name, self.times[name])


# -- the steps -------------------------------------------------------------------------------
def _read_password(state: dict) -> str | None:
    path = state.get("password_file")
    if not path:
        return None
    return Path(path).read_text().strip() or None


def _tree_and_definition(conn: Backend, req: CreateRequest, site: Site, entry: Entry, xml: str,
                         storage: Any, steps: _Steps) -> dict:
    from virtmix.converge.prepare import prepare
    from virtmix.rootfs import container_state

    with steps.step("root filesystem") as detail:
        if req.template == "busybox":
            from virtmix.create.busybox import make_tree
            from virtmix.rootfs.from_model import setup_from_model

            detail("busybox tree")
            make_tree(storage, req.name, setup_from_model(req.name, entry.spec), req.privileged,
                      idmap=entry.spec.idmap.as_tuple if entry.spec.idmap else None)
        prepare(site, entry, progress=detail)  # apply's own step: build/cache, clone, customise
    state = container_state(storage, req.name)
    steps.log.line(f"tree: {storage.container_dir(req.name) / 'rootfs'} ({state['method']} "
                   f"of {state['cache_entry']}, "
                   f"{'privileged' if state.get('privileged') else 'unprivileged'})")
    with steps.step("define"):
        steps.log.line("definition:\n" + xml.rstrip())
        conn.define(xml)
    return state


def _make(conn: Backend, req: CreateRequest, site: Site, entry: Entry, xml: str, storage: Any,
          steps: _Steps) -> CreateResult:
    from virtmix.rootfs import remove_container_tree

    try:
        state = _tree_and_definition(conn, req, site, entry, xml, storage, steps)
    except BaseException:
        # Nothing of a failed create stays behind. check_free saw no tree of this name
        # (under the create lock), so one there now is this call's own.
        if os.path.lexists(storage.container_dir(req.name)):
            with contextlib.suppress(VirtmixError, OSError):
                remove_container_tree(storage, req.name)
            steps.log.line(f"removed the tree of {req.name} (create failed)")
        raise
    result = CreateResult(
        name=req.name, uri=conn.uri, tree=str(storage.container_dir(req.name) / "rootfs"),
        method=state["method"], cache_entry=state["cache_entry"],
        privileged=bool(state.get("privileged")), password=_read_password(state),
        password_file=state.get("password_file"), started=False, log=steps.log.path)
    if req.start:
        try:
            with steps.step("start"):
                conn.start(req.name)
            result.started = True
        except VirtmixError as exc:
            # Made all the same: the caller shows the result (and the password, once) first.
            steps.log.line(f"start failed: {exc.message}")
            result.start_error = exc
    result.steps = dict(steps.times)
    return result


def create(req: CreateRequest, report: Report | None = None) -> CreateResult:
    """Make the container: tree, definition (and start with req.start); nothing on refusal.

    Refuses an existing domain or tree of that name (ConflictError, exit 9) before anything
    is made; a failure later removes what this call made.
    """
    from virtmix.backend import open_connection
    from virtmix.render.templates import render_domain
    from virtmix.rootfs import Storage

    report = report or Report()
    site, entry = build_site(req)
    xml = mark_created(render_domain(site, entry), req)
    storage = Storage(req.storage_dir)
    conn = open_connection(req.uri)
    try:
        check_free(conn, req, storage)
        with storage.lock(f"create-{req.name}", wait=False):
            check_free(conn, req, storage)  # again: another create may have just finished
            log = CreateLog(storage, req.name)
            log.line(f"virtmix create {req.name} on {req.uri}: template {req.template}, suite "
                     f"{req.suite}, variant {req.variant}, packages {list(req.packages)}, "
                     f"ssh keys {len(req.ssh_keys)}, root password "
                     f"{'generated' if req.root_password else 'none'}, storage {storage.root}")
            try:
                result = _make(conn, req, site, entry, xml, storage, _Steps(report, log))
                log.line(f"created {req.name} in {result.seconds} s")
                return result
            except BaseException as exc:
                log.line(f"failed: {type(exc).__name__}: {exc}")
                raise
            finally:
                log.close()
    finally:
        conn.close()
