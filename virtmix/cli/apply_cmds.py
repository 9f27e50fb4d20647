"""plan, apply, destroy: converge an inventory onto its libvirt daemons, or take it down.

Exit codes of `plan`: 0 nothing to do, 10 changes pending, 9 an entry clashes with a domain
virtmix does not own, 5 a host's daemon could not be read. `apply`: 0 converged, 11 some
entries failed (the others were applied), 9 the inventory is locked by another apply.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from virtmix.backend.protocol import Backend
from virtmix.cli.apply_output import (
    outcome_line,
    plan_to_dict,
    print_item,
    print_plan,
    print_result,
)
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, QUIET_OPTION, Output, app, err, out, print_json
from virtmix.converge.apply import (
    Context,
    close_all,
    connect_and_observe,
    connection_failures,
    observe_and_plan,
    run_plan,
)
from virtmix.converge.desired import desired_documents, network_uri
from virtmix.converge.destroy import (
    Outcome,
    Target,
    destroy_target,
    domain_target,
    site_targets,
)
from virtmix.converge.placement import observe_and_place, placement_uris
from virtmix.converge.plan import Item, Options, Plan
from virtmix.errors import ApplyFailedError, BackendError, ConflictError, UsageError
from virtmix.inventory.site import Site
from virtmix.nesting.guests import open_site as load_site
from virtmix.nesting.guests import register_transports
from virtmix.util.locking import locked

INVENTORY_ARG = typer.Argument(..., metavar="INVENTORY", help="The inventory YAML file.")
PRUNE = typer.Option(False, "--prune", help="Also remove virtmix domains and networks of this "
                     "site that are no longer in the inventory.")
ADOPT = typer.Option(False, "--adopt", help="Take over domains/networks of the same name that "
                     "virtmix did not define.")
RESTART = typer.Option(False, "--restart", help="Restart running domains whose change cannot "
                       "be made live (default: only reported).")
WAIT = typer.Option(True, "--wait/--no-wait", help="Wait for another apply/destroy holding "
                    "the lock (default), or refuse at once.")
LOCK_TIMEOUT = typer.Option(300.0, "--lock-timeout", metavar="SECONDS",
                            help="Give up waiting for the lock after this long.")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
EXIT_PENDING = 10


def _plan(inventory: Path, opts: Options) -> tuple[Site, Plan, dict[str, Backend]]:
    site = load_site(inventory)
    placed, *read = observe_and_place(site)  # entries with host: auto / hosts: / group:
    if placed is not site:  # containers of placed guests: reached through virtmix's ssh
        register_transports(placed)
    site = placed
    domains, networks = desired_documents(site)
    if OPTIONS.connect:  # -c with an inventory: only what lives on that connection
        uris = sorted({d.entry.uri for d in domains} | {n.uri for n in networks})
        domains = [d for d in domains if d.entry.uri == OPTIONS.connect]
        networks = [n for n in networks if n.uri == OPTIONS.connect]
        if not domains and not networks:  # not "nothing to do": nothing was compared
            raise UsageError(f"-c {OPTIONS.connect}: no host of {site.path} uses it",
                             hint="its connections: " + ", ".join(uris))
    plan, conns = observe_and_plan(site, domains, networks, opts,
                                   read=(read[0], read[1]) if read[1] else None)
    return site, plan, conns


def _lock_targets(site: Site, plan: Plan | None = None) -> list[tuple[str, str]]:
    uris = {e.uri for e in site.entries} | {network_uri(site, n) for n in site.networks}
    uris |= set(placement_uris(site))  # every host an entry may be placed on
    return [("inventory", str(site.path))] + [("uri", u) for u in uris]


def warn_privileged(plan: Plan) -> None:
    """Say which containers this plan defines without a user namespace (issue: privileged
    only on request, with a warning): a given tree runs privileged unless the entry says
    `privileged: false`, and `privileged: true` is the explicit request."""
    from virtmix.render.views import is_privileged

    names = [i.address for i in plan.items if i.kind == "container" and i.entry is not None
             and i.status in ("create", "update") and is_privileged(i.entry)]
    if not names:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    err.print(f"virtmix: warning: {shown} run{'s' if len(names) == 1 else ''} privileged "
              "(no user namespace: root inside is root on the host); a built rootfs runs "
              "unprivileged, a given tree does with `privileged: false` once shifted to "
              "the idmap", markup=False)


def _unreachable(plan: Plan) -> list[Item]:
    return [i for i in plan.items if i.status == "unreachable"]


@app.command("plan")
def plan_cmd(inventory: Path = INVENTORY_ARG, prune: bool = PRUNE, adopt: bool = ADOPT,
             restart: bool = RESTART, output: Output = OUTPUT_OPTION,
             diff: bool = typer.Option(True, "--diff/--no-diff", help="Show XML diffs."),
             tree: bool = typer.Option(False, "--tree", help="Also draw host -> guests -> "
                                       "containers with what apply would do to each."),
             ) -> None:
    """Show what apply would change. Exit 0: nothing to do; 10: changes pending."""
    _site, plan, conns = _plan(inventory, Options(prune=prune, adopt=adopt, restart=restart))
    close_all(conns)
    if output == Output.json:
        print_json(plan_to_dict(plan))
    else:
        print_plan(out, plan, show_diff=diff)
        warn_privileged(plan)
        if tree:
            from virtmix.nesting.guests import plan_tree

            out.print(plan_tree(_site, plan.items), markup=False)
    down = _unreachable(plan)
    if down:
        raise BackendError(f"could not read {down[0].uri}: {down[0].reason}")
    refused = [i for i in plan.items if i.status == "refuse"]
    if refused:
        raise ConflictError(f"{len(refused)} entr{'y' if len(refused) == 1 else 'ies'} clash "
                            f"with domains virtmix does not own: {refused[0].reason}")
    if plan.pending:
        raise typer.Exit(EXIT_PENDING)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs a confirmation: run with --yes")
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)


def _progress_reporter(total: int):
    if OPTIONS.quiet or total == 0:
        return None, None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    task = progress.add_task("applying", total=total)

    def report(event: str, item: Item, outcome) -> None:
        if event == "start":
            progress.update(task, description=f"{item.address}: {', '.join(item.ops)}")
            return
        progress.advance(task)
        progress.console.print(outcome_line(outcome), markup=False)

    return progress, report


@app.command("apply")
def apply_cmd(inventory: Path = INVENTORY_ARG, yes: bool = YES, prune: bool = PRUNE,
              adopt: bool = ADOPT, restart: bool = RESTART, wait: bool = WAIT,
              lock_timeout: float = LOCK_TIMEOUT,
              jobs: int = typer.Option(4, "--jobs", "-j", min=1,
                                       help="Entries of one host applied at once."),
              quiet: bool = QUIET_OPTION) -> None:
    """Converge the inventory: define, start, tune live, (with --prune) remove."""
    site = load_site(inventory)
    with locked(_lock_targets(site), purpose=f"apply {site.path}", wait=wait,
                timeout=lock_timeout, on_wait=lambda m: err.print(f"virtmix: {m}")):
        _site, plan, conns = _plan(inventory, Options(prune=prune, adopt=adopt, restart=restart))
        try:
            _apply(_site, plan, conns, yes, jobs)
        finally:
            close_all(conns)


def _apply(site: Site, plan: Plan, conns: dict[str, Backend], yes: bool, jobs: int) -> None:
    if not plan.pending:
        print_plan(out, plan, show_diff=False)
        out.print("nothing to do: everything matches the inventory")
        return
    if not OPTIONS.quiet or not yes:
        print_plan(out, plan, show_diff=not yes)
    warn_privileged(plan)
    down = _unreachable(plan)
    if down and all(i in down for i in plan.pending):  # nothing it could do: as plan says
        raise BackendError(f"could not read {down[0].uri}: {down[0].reason}")
    _confirm("Apply these changes?", yes)
    todo = [i for i in plan.items if i.pending]
    progress, report = _progress_reporter(len(todo))
    ctx = Context(site, conns, jobs=jobs, report=report,
                  opts=Options(prune=plan.prune))
    if progress:
        with progress:
            result = run_plan(ctx, plan)
    else:
        result = run_plan(ctx, plan)
    print_result(out, err, result)
    if result.interrupted:
        err.print("virtmix: interrupted; run apply again to finish (it converges)")
        raise typer.Exit(130)
    if result.failed:
        raise ApplyFailedError(f"{len(result.failed)} of {len(todo)} entries failed; the "
                               "others were applied")


# -- destroy ---------------------------------------------------------------------------
def _destroy_targets(targets: list[str]
                     ) -> tuple[Site | None, list[Target], dict[str, Backend]]:
    first = Path(targets[0])
    if len(targets) == 1 and first.suffix in (".yaml", ".yml") and first.is_file():
        site = load_site(first)
        # Placed entries: destroyed where they were placed; those never placed are not there.
        site, placing, _read = observe_and_place(site, existing_only=True)
        close_all(placing)
        entries = [e for e in site.entries if not OPTIONS.connect or e.uri == OPTIONS.connect]
        nets = {n: network_uri(site, n) for n in site.networks
                if not OPTIONS.connect or network_uri(site, n) == OPTIONS.connect}
        if OPTIONS.connect and not entries and not nets and site.entries:
            raise UsageError(f"-c {OPTIONS.connect}: no host of {site.path} uses it")
        conns, obs = connect_and_observe(sorted({e.uri for e in entries} | set(nets.values())))
        site.entries = entries
        return site, site_targets(site, conns, nets, connection_failures(obs)), conns
    # Named domains are found as every admin verb finds them (admin.targets.Session: -c,
    # $LIBVIRT_DEFAULT_URI, both local drivers, the inventory's hosts and GUEST/NAME); its
    # connections are the ones destroy then uses.
    from virtmix.admin.targets import Session

    session = Session(connect=OPTIONS.connect, inventory=OPTIONS.inventory)
    try:
        located = [session.find(n) for n in targets]
    except BaseException:
        session.close()
        raise
    for warning in session.warnings:
        err.print(f"virtmix: warning: {warning}", markup=False)
    site = session.site
    found = [domain_target(t.conn, t.name, t.address, site.name if site else None)
             for t in located]
    return site, found, session.connections


def _destroy_all(targets: list[Target], conns: dict[str, Backend], **flags: bool) -> None:
    """Destroy in parallel, phase by phase: nested containers, then the rest, then networks.

    libvirt's LXC destroy waits up to ~1.8 s for an init that ignores SIGTERM (busybox,
    systemd) before it kills it: done one by one, 20 containers take half a minute.
    """
    phases = [[t for t in targets if not t.network and "/" in t.address],
              [t for t in targets if not t.network and "/" not in t.address],
              [t for t in targets if t.network]]
    for phase in phases:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {pool.submit(destroy_target, conns[t.uri], t, **flags): t for t in phase}
            for fut in as_completed(futures):
                fut.result()
                t = futures[fut]
                out.print(f"{t.address}: {t.result}", markup=False)


@app.command("destroy")
def destroy_cmd(targets: list[str] = typer.Argument(..., metavar="INVENTORY | NAME..."),
                yes: bool = YES,
                delete_rootfs: bool = typer.Option(False, "--delete-rootfs", help="Also delete "
                                                   "the trees and disk images virtmix made."),
                force_foreign: bool = typer.Option(False, "--force-foreign", help="Also remove "
                                                   "domains virtmix did not define."),
                wait: bool = WAIT, lock_timeout: float = LOCK_TIMEOUT,
                quiet: bool = QUIET_OPTION) -> None:
    """Stop and undefine an inventory's domains and networks, or the named domains."""
    site, found, conns = _destroy_targets(targets)
    try:
        present = [t for t in found if t.exists]
        unread = [t for t in found if t.outcome is Outcome.FAILED]
        for t in unread:
            err.print(f"virtmix: {t.address}: {t.result}", markup=False)
        if not present:
            if unread:
                raise BackendError(f"{len(unread)} could not be checked: {unread[0].result}")
            out.print("nothing to destroy: none of them is defined")
            return
        for t in present if not (OPTIONS.quiet and yes) else ():  # the list is for a human
            note = f" [{t.foreign}]" if t.foreign else ""
            if t.owns_tree:  # made by `virtmix create`: like lxc-destroy, the tree goes too
                note += " [made by virtmix create: its root filesystem is deleted too]"
            out.print(f"- {'network' if t.network else 'domain'} {t.address} on {t.uri}{note}",
                      markup=False)
        trees = delete_rootfs or any(t.owns_tree for t in present)
        _confirm(f"Destroy these {len(present)}" + (" and delete their root filesystems "
                                                    "permanently" if trees else "") + "?", yes)
        locks = _lock_targets(site) if site else []
        locks += [("uri", t.uri) for t in present]
        with locked(locks, purpose="destroy", wait=wait, timeout=lock_timeout,
                    on_wait=lambda m: err.print(f"virtmix: {m}")):
            _destroy_all(present, conns, force_foreign=force_foreign,
                         delete_rootfs=delete_rootfs)
    finally:
        close_all(conns)
    bad = [t for t in present if t.outcome is not Outcome.REMOVED] + unread
    refused = [t for t in bad if t.outcome is Outcome.REFUSED]
    if refused:
        raise ConflictError(f"{len(refused)} not removed: "
                            "not virtmix's (--force-foreign removes them)")
    if bad:
        raise ApplyFailedError(f"{len(bad)} could not be removed: {bad[0].result}")


__all__ = ["apply_cmd", "destroy_cmd", "plan_cmd", "print_item"]
