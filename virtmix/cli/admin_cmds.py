"""Admin verbs with lxc-* names: ls, info, start, stop, console, freeze, unfreeze, cgroup.

They work on any domain of the connections in use (see virtmix/admin/targets.py), whether
virtmix or virsh defined it. Exit codes: 6 unknown name, 8 wrong state (e.g. not running),
2 usage (including an unknown cgroup key), 5 libvirt refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from virtmix.admin import cgroup_verbs, lifecycle, listing
from virtmix.admin.targets import Session, env_limit
from virtmix.admin.trees import remount
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, QUIET_OPTION, Output, app, err, out, print_json
from virtmix.cli.completers import complete_cgroup_key, complete_domain
from virtmix.converge.verify import WAIT_SECONDS
from virtmix.domain.settings import parse_domain
from virtmix.domain.tunables import cgroup_keys
from virtmix.hosts import is_local

NAME_ARG = typer.Argument(..., metavar="NAME", help="Domain name, or GUEST/NAME (needs -i).",
                          autocompletion=complete_domain)


@contextmanager
def admin_session() -> Iterator[Session]:
    session = Session(connect=OPTIONS.connect, inventory=OPTIONS.inventory)
    try:
        yield session
    finally:
        for w in session.warnings:
            err.print(f"virtmix: warning: {w}", markup=False)
        session.close()


def print_columns(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table (no trailing blanks, no box): easy to read and to grep/awk."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for line in [headers, *rows]:
        out.print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True))
                  .rstrip(), markup=False)


def say(text: str) -> None:
    if not OPTIONS.quiet:
        out.print(text, markup=False)


@app.command("ls")
def ls_domains(output: Output = OUTPUT_OPTION, tree: bool = typer.Option(
        False, "--tree", help="Draw host -> guests -> containers with state, cpuset, shares."),
               ) -> None:
    """List containers and guests of every connection in use (lxc-ls --fancy, incus list).

    Columns: name, kind, state, host, parent, ipv4 (running domains), cpuset, shares,
    memory (the effective limit: the hard limit when one is set), site (who manages it),
    managed ('foreign': virtmix did not define it). -o json carries the same keys.

    Without -c: lxc:///system and qemu:///system, also when $LIBVIRT_DEFAULT_URI names one
    of them; another $LIBVIRT_DEFAULT_URI limits the listing to it (and ls says so). With
    -c URI: that connection only. With -i INVENTORY: its hosts, and nested containers
    through their guest's libvirt."""
    with admin_session() as session:
        rows = listing.ls_rows(session)
        limit = None if session.connect or session.site is not None else env_limit()
    if limit:
        err.print(f"virtmix: note: listing only $LIBVIRT_DEFAULT_URI={limit}; unset it or "
                  "use -c URI for another connection", markup=False)
    if output == Output.json:
        print_json(rows)
        return
    if tree:
        from virtmix.nesting.guests import render_tree, tree_from_rows

        out.print(render_tree(tree_from_rows(rows)), markup=False)
        return
    print_columns([c.upper() for c in listing.LS_COLUMNS],
                  [listing.ls_cells(row) for row in rows])


@app.command("info")
def info_domain(name: str = NAME_ARG, output: Output = OUTPUT_OPTION) -> None:
    """State, placement, limits and live figures of one domain (lxc-info)."""
    from virtmix.errors import BackendError

    with admin_session() as session:
        try:
            data = listing.info(session.find(name))
        except BackendError as exc:
            if "/" not in name:
                raise
            # A nested container whose guest does not answer: its state is unknown now,
            # whatever was last seen; say so and why.
            data = listing.unknown_info(session, name, exc.message)
    if output == Output.json:
        print_json(data)
        return
    pairs = listing.info_lines(data)
    width = max(len(k) for k, _ in pairs) + 1
    for key, value in pairs:
        out.print(f"{(key + ':').ljust(width)} {value}", markup=False)


@app.command("start")
def start_domain(
    name: str = NAME_ARG,
    console: bool = typer.Option(False, "--console", help="Attach to its console after start."),
    wait: bool = typer.Option(False, "--wait", help="Also wait until systemd inside reports "
                              "running or degraded (a guest: its libvirt or ssh answers)."),
    wait_timeout: float = typer.Option(WAIT_SECONDS, "--wait-timeout", metavar="SECONDS",
                                       help="How long --wait waits."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Start a domain in the background (lxc-start -d); --console attaches to it.

    It must stay up for a settle window (~1.5 s): one that dies exits 8 with the last
    lines of its log."""
    with admin_session() as session:
        target = session.find(name)
        if target.record.kind == "lxc" and is_local(target.place.uri):
            # An overlay clone's mount is gone after a host reboot: mount it again first.
            remount(parse_domain(target.record.tree).rootfs)
        note = lifecycle.start(target, wait=wait, timeout=wait_timeout, site=session.site)
        say(f"{target.address}: {target.record.state}" + (f" ({note})" if note else ""))
        if console:
            _console(target)


@app.command("stop")
def stop_domain(
    name: str = NAME_ARG,
    timeout: float = typer.Option(None, "--timeout", "-t", help="Seconds to wait for a "
                                  "graceful stop before destroying (lxc-stop -t; default "
                                  "the inventory's settings.shutdown_timeout, else 30)."),
    force: bool = typer.Option(False, "--force", "-k", help="Destroy at once (pull the plug)."),
    no_kill: bool = typer.Option(False, "--no-kill", help="On timeout leave it running "
                                 "and exit 8 instead of destroying it."),
    signal: str = typer.Option(None, "--signal", "-s", help="Containers: the halt signal "
                               "for init (default SIGPWR; libvirt's shutdown for systemd)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Stop a domain: ask it to shut down, wait --timeout, then destroy it (lxc-stop).

    Guests get an ACPI power-button press; containers with systemd get libvirt's shutdown,
    other containers SIGPWR (busybox init halts on it)."""
    with admin_session() as session:
        target = session.find(name)
        if timeout is None:
            site = session.site or next(iter(session.found_sites()), None)
            timeout = site.inventory.settings.shutdown_timeout if site else 30.0
        if target.record.kind == "kvm" and not force and target.record.state != "shutoff":
            _stop_nested_first(session, target, timeout)
        result = lifecycle.stop(target, timeout=timeout, force=force, kill=not no_kill,
                                signal=signal)
    how = "shut down" if result.how == "shutdown" else "destroyed"
    say(f"{target.address}: {how} after {result.seconds:.1f}s")


def _stop_nested_first(session: Session, guest, timeout: float) -> None:
    """A guest's containers (as its inventory says, -i or the one the guest records) are
    stopped cleanly before the guest powers off, so their trees are consistent."""
    from virtmix.errors import VirtmixError

    sites = [session.site] if session.site is not None else session.found_sites()
    for site in sites:
        for e in site.entries:
            if e.parent != guest.name:
                continue
            try:
                t = session.find(f"{guest.name}/{e.name}")
                if t.record.state in lifecycle.RUNNING or t.record.state == "paused":
                    r = lifecycle.stop(t, timeout=timeout, force=False, kill=True)
                    say(f"{t.address}: {'shut down' if r.how == 'shutdown' else 'destroyed'}"
                        f" after {r.seconds:.1f}s")
            except VirtmixError as exc:
                err.print(f"virtmix: warning: {guest.name}/{e.name}: not stopped first: "
                          f"{exc.message}", markup=False)


@app.command("freeze")
def freeze_domain(name: str = NAME_ARG, quiet: bool = QUIET_OPTION) -> None:
    """Freeze every process of a domain (lxc-freeze; libvirt suspend: virsh shows paused)."""
    with admin_session() as session:
        target = session.find(name)
        lifecycle.freeze(target)
    say(f"{target.address}: frozen ({target.record.state})")


@app.command("unfreeze")
def unfreeze_domain(name: str = NAME_ARG, quiet: bool = QUIET_OPTION) -> None:
    """Thaw a frozen domain (lxc-unfreeze; libvirt resume)."""
    with admin_session() as session:
        target = session.find(name)
        lifecycle.unfreeze(target)
    say(f"{target.address}: {target.record.state}")


def _console(target) -> None:
    from virtmix.backend.console import ESCAPE_NAME, run_console  # libvirt events: only here

    target.need_running("console")
    err.print(f"Connected to {target.address} ({target.place.uri}).", markup=False)
    err.print(f"Escape character is {ESCAPE_NAME}: press it to leave the console.",
              markup=False)
    reason = run_console(target.place.uri, target.name)
    err.print(f"\r\nvirtmix: left the console of {target.address} ({reason})", markup=False)


@app.command("console")
def console_domain(name: str = NAME_ARG) -> None:
    """Attach this terminal to a running domain's console (lxc-console). Leave with Ctrl-]."""
    with admin_session() as session:
        _console(session.find(name))


# ignore_unknown_options: `cgroup vm0 cpu.cfs_quota_us -1` (the classic "no limit") is a
# value, not an option.
@app.command("cgroup", context_settings={"ignore_unknown_options": True})
def cgroup_domain(
    name: str = NAME_ARG,
    key: str = typer.Argument(None, autocompletion=complete_cgroup_key,
                              help=", ".join(cgroup_keys())
                              + "; without it every key is listed with its value."),
    value: str = typer.Argument(None, help="New value; without it the value is printed."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Read or set a cgroup setting, live and in the persistent definition (lxc-cgroup).

    Same keys as the inventory's `cgroup:`; memory values in bytes or with a unit (256M),
    'max' for no limit. An unknown key exits 2 with the closest known key. `cgroup NAME`
    lists every key with its live value (and the persistent one where it differs)."""
    if key is None:
        with admin_session() as session:
            values = cgroup_verbs.read_all(session.find(name))
        if output == Output.json:
            print_json([v.as_dict() for v in values])
            return
        print_columns(["KEY", "LIVE", "PERSISTENT"],
                      [[v.key, "-" if v.live is None else v.live,
                        "-" if v.persistent is None else v.persistent] for v in values])
        return
    cgroup_verbs.key_spec(key)  # an unknown key fails before any connection
    with admin_session() as session:
        target = session.find(name)
        if value is None:
            result = cgroup_verbs.read_value(target, key)
        else:
            result = cgroup_verbs.set_value(target, key, value)
    if output == Output.json:
        print_json(result.as_dict())
        return
    shown = result.live if result.live is not None else result.persistent
    if result.live is not None and result.persistent not in (None, result.live):
        shown = f"{result.live} (persistent: {result.persistent})"
    out.print(str(shown), markup=False)
