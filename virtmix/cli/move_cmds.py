"""move: take a container (or a guest) of an inventory to another host, and say so there.

`virtmix -i SITE move NAME --to HOST` (or `move NAME --to HOST -i SITE`). HOST is an
inventory host, or (for containers) a guest of the site that hosts containers. The
inventory's text is edited (the entry's block moved under the target, comments kept) and
loaded to render the target's definition; the domain is moved (converge/move.py); only
then is the edited inventory written in place (fsynced, renamed). When the text cannot be
edited safely, nothing is moved and the change to make by hand is printed: `apply` of
the edited inventory then does the move (plan shows it as `move`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from virtmix.cli.admin_cmds import say
from virtmix.cli.base import OPTIONS, app, err
from virtmix.errors import NotFoundError, UsageError


def _section(site, entry, to: str) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """The key path of the mapping the entry goes into on `to`."""
    from virtmix.util.suggest import did_you_mean

    if to in site.inventory.hosts:
        return ("hosts", to, "containers" if entry.kind == "container" else "guests")
    guest = next((e for e in site.entries if e.kind == "guest" and e.name == to), None)
    if guest is not None and entry.kind == "container":
        return (*guest.keypath.split("."), "containers")
    names = list(site.inventory.hosts) + [e.name for e in site.entries if e.kind == "guest"]
    raise NotFoundError(f"move --to {to}: no host or guest of that name in {site.path}"
                        + did_you_mean(to, names))


def _load_edited(site, text: str):  # type: ignore[no-untyped-def]
    """The site as the edited text says (loaded from a sibling file, then forgotten)."""
    import tempfile

    from virtmix.nesting.guests import open_site

    fd, tmp = tempfile.mkstemp(prefix=".move-", suffix=".yaml", dir=site.path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        new = open_site(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    new.path = site.path  # its metadata names the real inventory
    return new


@app.command("move")
def move_domain(name: str = typer.Argument(..., metavar="NAME", help="NAME or GUEST/NAME."),
                to: str = typer.Option(..., "--to", metavar="HOST",
                                       help="An inventory host, or a guest that hosts "
                                            "containers."),
                ) -> None:
    """Move a container (its tree copied while it runs, then frozen briefly) or a guest
    (libvirt migration) to another host; the inventory is updated."""
    from virtmix.backend import open_connection
    from virtmix.converge.desired import desired_domain
    from virtmix.inventory.edit import MoveEditError, move_entry
    from virtmix.nesting.guests import open_site
    from virtmix.util.files import write_atomic

    path = OPTIONS.inventory  # -i is global: before or after the verb
    if not path:
        raise UsageError("move needs the inventory: virtmix -i SITE move NAME --to HOST")
    site = open_site(Path(path))
    entry = site.find(name)
    section = _section(site, entry, to)
    here = entry.parent or entry.host
    if here == to:
        raise UsageError(f"move: {entry.address} is already on {to}")
    text = site.path.read_text()
    try:
        new_text = move_entry(text, tuple(entry.keypath.split(".")), section)
    except MoveEditError as exc:
        err.print(f"virtmix: cannot edit {site.path} safely ({exc.message}); nothing moved. "
                  f"Move the entry {entry.keypath} under {'.'.join(section)} by hand, then "
                  f"`virtmix apply {site.path}` moves it.", markup=False)
        raise typer.Exit(2) from None
    new_site = _load_edited(site, new_text)
    new_entry = new_site.find(entry.name)
    rendered = desired_domain(new_site, new_entry).xml
    notes: list[str] = []
    with open_connection(entry.uri) as src, open_connection(new_entry.uri) as dst:
        if entry.kind == "container":
            from virtmix.converge.move import move_container
            from virtmix.converge.move_site import hooks_for

            moved = move_container(src, dst, entry.name, rendered,
                                   hooks_for(new_site, new_entry, entry.uri, notes),
                                   progress=say)
        else:
            from virtmix.converge.move_guest import move_guest, move_options
            from virtmix.converge.observe import owned_fields
            from virtmix.converge.plan import guest_move

            mode, why = guest_move(src.state(entry.name), entry.uri, new_entry.uri,
                                   owned_fields(src.get(entry.name).xml).get("type"),
                                   owned_fields(rendered).get("type"))
            say(f"{entry.name}: {mode} migration to {new_entry.uri}"
                + (f" ({why})" if why else ""))
            moved = move_guest(src, dst, entry.name, rendered, live=mode == "live",
                               **move_options(new_site, new_entry))
    mode = site.path.stat().st_mode & 0o7777
    write_atomic(site.path, new_text.encode(), mode=mode)
    for note in notes + moved.notes:
        err.print(f"virtmix: note: {note}", markup=False)
    say(f"{new_entry.address}: moved from {here} ({entry.uri}) to {to} ({new_entry.uri}), "
        f"{moved.state}; downtime {moved.downtime:.2f}s (copy while running "
        f"{moved.live_copy:.2f}s, frozen {moved.frozen_copy:.2f}s), total {moved.total:.1f}s; "
        f"{site.path} updated")
