"""snapshot [create] / ls / restore / rm, backup and restore: keeping copies of domains.

`virtmix snapshot NAME|SITE [--name SNAP]` takes a snapshot (`snapshot create` spelled out
also works); NAME may be repeated. SITE is an inventory file: every domain of the site, at
one moment. Exit codes: 6 unknown domain or snapshot, 9 a snapshot of that name exists,
2 a container behind a URI virtmix cannot reach over ssh (TLS, TCP).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
import typer.core

from virtmix.admin.targets import Place, Session, Target
from virtmix.cli.admin_cmds import admin_session, print_columns, say
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, Output, app, err, print_json
from virtmix.errors import NotFoundError, UsageError

SUBCOMMANDS = ("create", "ls", "restore", "rm")


class DefaultCreateGroup(typer.core.TyperGroup):
    """`snapshot NAME ...` means `snapshot create NAME ...` (the issue's spelling); the
    words ls/restore/rm/create are the subcommands, as with `virsh snapshot-*`."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        # `snapshot --host h1 --name s`: options of create, not of the group (which has none)
        if args and args[0].startswith("-") and args[0] != "--help":
            args = ["create", *args]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and args[0] != "--help":
            args = ["create", *args]
        return super().resolve_command(ctx, args)


snapshot_app = typer.Typer(cls=DefaultCreateGroup, no_args_is_help=True,
                           help="Snapshots of containers and guests: take, ls, restore, rm.")
app.add_typer(snapshot_app, name="snapshot")

TARGETS_ARG = typer.Argument(None, metavar="NAME|SITE...",
                             help="Domain names (GUEST/NAME with -i), or an inventory file.")


def _is_site(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) and Path(arg).is_file()


def resolve(session: Session, args: list[str],
            host: str | None = None) -> tuple[list[Target], object]:
    """Targets of the arguments (and of --host), and the Storage their snapshots live in."""
    from virtmix.inventory.load import load_site
    from virtmix.rootfs.storage import Storage

    targets: list[Target] = []
    storage = Storage()
    for arg in args:
        if not _is_site(arg):
            targets.append(session.find(arg))
            continue
        site = load_site(Path(arg))
        storage = Storage(site.inventory.settings.storage_dir)
        targets += _site_targets(session, site)
    if host:
        site = session.site
        if site is None:
            raise UsageError(f"--host {host}: names a host of an inventory; give it with -i")
        if host not in site.inventory.hosts:
            raise NotFoundError(f"--host {host}: no host of that name in {site.path}",
                                hint="hosts: " + ", ".join(site.inventory.hosts))
        storage = Storage(site.inventory.settings.storage_dir)
        targets += _site_targets(session, site, host)
    unique: dict[tuple[str, str], Target] = {}
    for t in targets:  # a domain named twice (NAME and its SITE) is frozen and taken once
        unique.setdefault((t.place.uri, t.name), t)
    targets = list(unique.values())
    if not targets:
        what = ", ".join(args + ([f"host {host}"] if host else []))
        raise NotFoundError(f"nothing to snapshot: no domain of {what} exists")
    return targets, storage


def _site_targets(session: Session, site, host: str | None = None) -> list[Target]:  # type: ignore[no-untyped-def]
    """Every applied domain of the site (of one of its hosts), where placement put it."""
    targets = []
    if site.unplaced:  # placed entries: snapshot them on the host placement chose
        from virtmix.converge.apply import close_all
        from virtmix.converge.placement import observe_and_place

        site, placing, _read = observe_and_place(site, existing_only=True)
        close_all(placing)
    for entry in site.entries:
        if host is not None and entry.host != host:
            continue
        if entry.parent:
            session.warnings.append(f"{entry.address}: nested in {entry.parent}; its "
                                    f"guest's snapshot holds it")
            continue
        conn = session.conn(Place(entry.uri, entry.host))
        try:
            targets.append(Target(Place(entry.uri, entry.host), conn, conn.get(entry.name)))
        except NotFoundError:
            session.warnings.append(f"{entry.name}: not defined on {entry.uri} "
                                    "(not applied?), skipped")
    return targets


HOST_OPTION = typer.Option(None, "--host", metavar="HOST",
                           help="Every domain of this inventory host (with -i), at one "
                                "moment.")


@snapshot_app.command("create")
def snapshot_create(targets: list[str] = TARGETS_ARG,
                    name: str = typer.Option(None, "--name", "-n", metavar="SNAP",
                                             help="Snapshot name (default snap-DATE-TIME)."),
                    host: str = HOST_OPTION) -> None:
    """Take a snapshot of domains (all at one moment), of every domain of a site, or of
    a host (--host)."""
    from virtmix.snapshots import ops, trees

    snap = name or trees.default_snapshot_name()
    if not targets and not host:
        raise UsageError("snapshot: which domains? give NAME, SITE or --host HOST")
    with admin_session() as session:
        found, storage = resolve(session, targets or [], host)
        taken, frozen = ops.take(found, snap, storage)
    for t in taken:
        say(f"{t.address}: snapshot {t.snapshot} taken in {t.seconds:.2f}s ({t.where})")
    if len(taken) > 1:
        say(f"{len(taken)} domains snapshotted at one moment (frozen for {frozen:.2f}s)")


@snapshot_app.command("ls")
def snapshot_ls(targets: list[str] = typer.Argument(None, metavar="[NAME|SITE...]"),
                host: str = HOST_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List snapshots of the given domains (default: every domain of the connections)."""
    from virtmix.snapshots import ops

    with admin_session() as session:
        if targets or host:
            found, storage = resolve(session, targets or [], host)
        else:
            from virtmix.rootfs.storage import Storage

            found = [Target(p, c, r) for p, c, r in session.records()]
            storage = Storage()
        rows = ops.listing(found, storage)
    if output == Output.json:
        print_json(rows)
        return
    print_columns(["DOMAIN", "KIND", "SNAPSHOT", "CREATED", "STATE", "COPY"],
                  [[r["domain"], r["kind"], r["snapshot"], r["created"], r["state"], r["copy"]]
                   for r in rows])


@snapshot_app.command("restore")
def snapshot_restore(target: str = typer.Argument(None, metavar="NAME|SITE"),
                     snap_arg: str = typer.Argument(None, metavar="[SNAP]"),
                     name: str = typer.Option(None, "--name", "-n", metavar="SNAP"),
                     host: str = HOST_OPTION) -> None:
    """Put a domain (or every domain of a site or host) back to a snapshot, in the state
    it had."""
    from virtmix.snapshots import ops

    target, snap_arg = _with_host(target, snap_arg, host, "restore")
    snap = _snap_name(snap_arg, name, "restore")
    with admin_session() as session:
        found, storage = resolve(session, [target] if target else [], host)
        began = time.monotonic()
        done = ops.restore(found, snap, storage)
        took = time.monotonic() - began
    for address in done:
        say(f"{address}: restored to {snap}")
    if len(done) > 1:
        say(f"{len(done)} domains restored to {snap} in {took:.2f}s")


@snapshot_app.command("rm")
def snapshot_rm(target: str = typer.Argument(None, metavar="NAME|SITE"),
                snap_arg: str = typer.Argument(None, metavar="[SNAP]"),
                name: str = typer.Option(None, "--name", "-n", metavar="SNAP"),
                host: str = HOST_OPTION) -> None:
    """Remove a snapshot of a domain (or of every domain of a site or host)."""
    from virtmix.snapshots import ops

    target, snap_arg = _with_host(target, snap_arg, host, "rm")
    snap = _snap_name(snap_arg, name, "rm")
    with admin_session() as session:
        found, storage = resolve(session, [target] if target else [], host)
        done = ops.remove(found, snap, storage)
    for address in done:
        say(f"{address}: snapshot {snap} removed")


def _with_host(target: str | None, snap: str | None, host: str | None,
               verb: str) -> tuple[str | None, str | None]:
    """With --host the only positional word is SNAP (`snapshot restore --host h1 s1`)."""
    if host and target and not snap and not _is_site(target):
        return None, target
    if not target and not host:
        raise UsageError(f"snapshot {verb}: which domains? give NAME, SITE or --host HOST")
    return target, snap


def _snap_name(positional: str | None, option: str | None, verb: str) -> str:
    from virtmix.errors import UsageError

    if positional and option and positional != option:
        raise UsageError(f"snapshot {verb}: two snapshot names given ({positional}, {option})")
    snap = positional or option
    if not snap:
        raise UsageError(f"snapshot {verb}: which snapshot? give SNAP or --name SNAP",
                         hint="see `virtmix snapshot ls NAME`")
    return snap


@app.command("backup")
def backup_domain(name: str = typer.Argument(..., metavar="NAME"),
                  to: Path = typer.Option(..., "--to", metavar="DIR",
                                          help="Directory for the archive.")) -> None:
    """Write a self-describing archive of a domain: definition, tree or disks, metadata."""
    from virtmix.snapshots import archive

    with admin_session() as session:
        target = session.find(name)
        made = archive.backup(target, to)
    say(f"{target.address}: backed up to {made.path} ({made.size_mib:.1f} MiB in "
        f"{made.seconds:.2f}s)")


@app.command("restore")
def restore_archive(path: Path = typer.Argument(..., metavar="ARCHIVE"),
                    host: str = typer.Option(None, "--host", metavar="HOST",
                                             help="Inventory host (with -i) to restore on."),
                    new_name: str = typer.Option(None, "--name", metavar="NAME",
                                                 help="Restore under another name."),
                    new_identity: bool = typer.Option(
                        False, "--new-identity",
                        help="A new UUID and MAC addresses instead of the archived ones."),
                    ) -> None:
    """Bring back a domain from `virtmix backup`'s archive, here or on another host."""
    from virtmix.snapshots import archive

    with admin_session() as session:
        uri, storage_dir = archive.restore_uri(session, path, host, OPTIONS.connect)
        made = archive.restore(session, path, uri, name=new_name, new_identity=new_identity,
                               storage_dir=storage_dir, host=host)
    for w in made.notes:
        err.print(f"virtmix: note: {w}", markup=False)
    say(f"{made.name}: restored on {made.uri} ({made.state})")
