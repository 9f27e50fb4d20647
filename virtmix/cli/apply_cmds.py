"""plan, apply, destroy: converge an inventory onto its libvirt daemons, or take it down.

Exit codes of `plan`: 0 nothing to do, 10 changes pending, 9 an entry clashes with a domain
virtmix does not own, 5 a host's daemon could not be read. `apply`: 0 converged, 11 some
entries failed (the others were applied), 9 the inventory is locked by another apply.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

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
from virtmix.cli.base import (
    ALLOW_URI_COMMANDS_OPTION,
    OPTIONS,
    OUTPUT_OPTION,
    QUIET_OPTION,
    Output,
    app,
    err,
    out,
    print_json,
    print_warnings,
)
from virtmix.cli.completers import complete_domain
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
    record_target,
    site_targets,
)
from virtmix.converge.placement import observe_and_place, placement_uris
from virtmix.converge.plan import Item, Options, Plan
from virtmix.converge.verify import WAIT_SECONDS
from virtmix.errors import (
    ApplyFailedError,
    BackendError,
    ConflictError,
    NotFoundError,
    UsageError,
)
from virtmix.inventory.site import Site
from virtmix.nesting.guests import open_site as load_site
from virtmix.nesting.guests import register_transports
from virtmix.util.locking import locked

INVENTORY_ARG = typer.Argument(..., metavar="INVENTORY", help="The inventory YAML file.")
APPLY_ARG = typer.Argument(..., metavar="INVENTORY | PLAN",
                           help="The inventory YAML file, or a plan saved by `plan --out`.")
PRUNE = typer.Option(False, "--prune", help="Also remove virtmix domains and networks of this "
                     "site that are no longer in the inventory.")
ADOPT = typer.Option(False, "--adopt", help="Take over domains/networks of the same name that "
                     "virtmix did not define.")
RESTART = typer.Option(False, "--restart", help="Restart running domains whose change cannot "
                       "be made live (default: only reported).")
# `--no-wait` keeps its old meaning (refuse at once when another apply holds the lock);
# `--wait` is the readiness wait of verified starts, as on `start`.
WAIT = typer.Option(True, "--lock-wait/--no-wait", help="Wait for another apply/destroy "
                    "holding the lock (default), or refuse at once.")
READY_WAIT = typer.Option(False, "--wait", help="After the settle check, also wait until "
                          "systemd in each started container reports running or degraded, "
                          "and each started guest's libvirt or ssh answers.")
READY_TIMEOUT = typer.Option(WAIT_SECONDS, "--wait-timeout", metavar="SECONDS",
                             help="How long --wait waits (per apply, all in parallel).")
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
    from virtmix.inventory.site import is_privileged

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
             allow_uri_commands: bool = ALLOW_URI_COMMANDS_OPTION,
             save: Path = typer.Option(None, "--out", metavar="PLAN", help="Also save the "
                                       "plan (JSON) for `apply PLAN`, which applies exactly "
                                       "it or refuses it once stale."),
             ) -> None:
    """Show what apply would change. Exit 0: nothing to do; 10: changes pending."""
    opts = Options(prune=prune, adopt=adopt, restart=restart)
    _site, plan, conns = _plan(inventory, opts)
    close_all(conns)
    if save is not None:
        _save_plan(save, _site, plan, opts)
    if output == Output.json:  # warnings in the document; stderr stays quiet for scripts
        print_json({**plan_to_dict(plan), "warnings": _site.warnings})
    else:
        print_warnings(_site)
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


def _save_plan(path: Path, site: Site, plan: Plan, opts: Options) -> None:
    from virtmix.converge.saved import saved_section, write_plan

    data = plan_to_dict(plan)
    data["saved"] = saved_section(site, plan, {"prune": opts.prune, "adopt": opts.adopt,
                                               "restart": opts.restart,
                                               "connect": OPTIONS.connect})
    write_plan(path, data)
    err.print(f"virtmix: plan saved to {path}; `virtmix apply {path}` applies exactly it",
              markup=False)


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
def apply_cmd(inventory: Path = APPLY_ARG, yes: bool = YES, prune: bool = PRUNE,
              adopt: bool = ADOPT, restart: bool = RESTART, wait: bool = WAIT,
              lock_timeout: float = LOCK_TIMEOUT,
              jobs: int = typer.Option(4, "--jobs", "-j", min=1,
                                       help="Entries of one host applied at once."),
              ready: bool = READY_WAIT, ready_timeout: float = READY_TIMEOUT,
              timeout: float = typer.Option(None, "--timeout", "-t", metavar="SECONDS",
                                            help="Seconds a guest apply must stop gets to "
                                            "shut down (ACPI) before it is forced off "
                                            "(default: settings.shutdown_timeout, 30)."),
              quiet: bool = QUIET_OPTION,
              allow_uri_commands: bool = ALLOW_URI_COMMANDS_OPTION) -> None:
    """Converge the inventory: define, start (verified), tune live, (with --prune) remove.

    Every domain it starts must stay up for a settle window (~1.5 s); one that dies fails
    its entry (its log's last lines are shown) and the others carry on (exit 11).

    Given a plan saved by `plan --out`, apply exactly it (no confirmation: the plan was the
    review), or exit 13 when it is stale."""
    from virtmix.converge.saved import is_saved_plan

    if is_saved_plan(inventory):
        if prune or adopt or restart or OPTIONS.connect:
            raise UsageError(f"{inventory} is a saved plan: --prune, --adopt, --restart and "
                             "-c were fixed when it was made",
                             hint="give them to `virtmix plan INVENTORY --out PLAN`")
        _apply_saved(inventory, wait, lock_timeout, jobs)
        return
    site = load_site(inventory)
    with locked(_lock_targets(site), purpose=f"apply {site.path}", wait=wait,
                timeout=lock_timeout, on_wait=lambda m: err.print(f"virtmix: {m}")):
        _site, plan, conns = _plan(inventory, Options(prune=prune, adopt=adopt, restart=restart))
        try:
            _apply(_site, plan, conns, yes, jobs, ready=ready, ready_timeout=ready_timeout,
                   stop_timeout=timeout)
        finally:
            close_all(conns)


def _apply_saved(path: Path, wait: bool, lock_timeout: float, jobs: int) -> None:
    """Check the saved plan's files, lock, read libvirt again, check it, apply it."""
    from virtmix.converge import saved

    data = saved.read_plan(path)
    saved.check_files(path, data)
    opts_saved = data["saved"]["options"]
    OPTIONS.connect = opts_saved.get("connect")
    inventory = Path(data["saved"]["inventory"]["path"])
    site = load_site(inventory)
    saved.check_site_files(path, data, site)
    opts = Options(prune=opts_saved["prune"], adopt=opts_saved["adopt"],
                   restart=opts_saved["restart"])
    with locked(_lock_targets(site), purpose=f"apply {path}", wait=wait,
                timeout=lock_timeout, on_wait=lambda m: err.print(f"virtmix: {m}")):
        saved.check_files(path, data)  # again: it may have changed while we waited
        _site, plan, conns = _plan(inventory, opts)
        try:
            saved.check_plan(path, data, plan)
            _apply(_site, plan, conns, True, jobs)
        finally:
            close_all(conns)


def _apply(site: Site, plan: Plan, conns: dict[str, Backend], yes: bool, jobs: int, *,
           ready: bool = False, ready_timeout: float = WAIT_SECONDS,
           stop_timeout: float | None = None) -> None:
    if not plan.pending:
        print_plan(out, plan, show_diff=False)
        out.print("nothing to do: everything matches the inventory")
        return
    print_warnings(site)
    if not OPTIONS.quiet or not yes:
        print_plan(out, plan, show_diff=not yes)
    warn_privileged(plan)
    down = _unreachable(plan)
    if down and all(i in down for i in plan.pending):  # nothing it could do: as plan says
        raise BackendError(f"could not read {down[0].uri}: {down[0].reason}")
    _confirm("Apply these changes?", yes)
    todo = [i for i in plan.items if i.pending]
    progress, report = _progress_reporter(len(todo))
    if stop_timeout is None:
        stop_timeout = site.inventory.settings.shutdown_timeout
    # Ctrl-C notices are printed even with --quiet: the admin asked and waits for an answer.
    ctx = Context(site, conns, jobs=jobs, report=report, opts=Options(prune=plan.prune),
                  notice=lambda line: err.print(f"virtmix: {line}", markup=False),
                  wait=ready, wait_timeout=ready_timeout, stop_timeout=stop_timeout)
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
        # Opened, not observed: destroy reads only its own domains (one listing each
        # connection), not every domain's live definition and cgroups as plan does.
        conns, obs = connect_and_observe(sorted({e.uri for e in entries} | set(nets.values())),
                                         read=False)
        site.entries = entries
        return site, site_targets(site, conns, nets, connection_failures(obs)), conns
    # Named domains are found as every admin verb finds them (admin.targets.Session: -c,
    # $LIBVIRT_DEFAULT_URI, both local drivers, the inventory's hosts and GUEST/NAME); its
    # connections are the ones destroy then uses.
    from virtmix.admin.targets import Session

    session = Session(connect=OPTIONS.connect, inventory=OPTIONS.inventory)
    try:
        # One domain listing per connection for all the names (not a lookup each), and
        # the records found are the targets' (not read a second time).
        located = []
        each = session.find_each(targets)
        for name in targets:
            try:
                located.append(next(each))
            except (NotFoundError, UsageError) as exc:
                _say_no_file(name, exc)
    except BaseException:
        session.close()
        raise
    for warning in session.warnings:
        err.print(f"virtmix: warning: {warning}", markup=False)
    site = session.site
    found = [record_target(t.record, t.address, site.name if site else None, t.conn.uri)
             for t in located]
    return site, found, session.connections


def _say_no_file(name: str, exc: NotFoundError | UsageError) -> None:
    """Raise exc; but a name that looks like an inventory file (NAME.yaml, a path) and is
    none also says that the file does not exist: `destroy nope.yaml` was a typo."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        raise exc
    if isinstance(exc, UsageError):  # a path read as GUEST/NAME
        exc = NotFoundError(f"no domain named {name!r}")
    if not path.exists():
        raise NotFoundError(f"{name}: no such inventory file, and {exc.message}",
                            hint="destroy takes one INVENTORY file, or domain "
                                 "NAMEs") from None
    raise NotFoundError(f"{name}: an inventory file must be destroy's only argument "
                        f"(and a file), and {exc.message}") from None


def _say_kept(site: Site | None, targets: list[Target]) -> None:
    """destroy says what it leaves on disk and where (docs/apply.md)."""
    kept = [f"{t.address}: {k}" for t in targets for k in t.kept]
    if site is not None:
        storage = Path(site.inventory.settings.storage_dir)
        for sub, what in (("cache", "base trees (`virtmix rootfs prune` removes unused ones)"),
                          ("images", "guest base images, shared by guests"),
                          ("ssh", "virtmix's ssh key and pinned host keys")):
            if (storage / sub).is_dir():
                kept.append(f"{storage / sub}: {what}")
    if kept and not OPTIONS.quiet:
        out.print("kept:", markup=False)
        for line in kept:
            out.print(f"  {line}", markup=False)


def _destroy_all(targets: list[Target], conns: dict[str, Backend], *, jobs: int = 8,
                 **flags: Any) -> None:
    """Destroy in parallel, phase by phase: nested containers, then the rest, then networks.

    libvirt's LXC destroy waits up to ~1.8 s for an init that ignores SIGTERM (busybox,
    systemd) before it kills it: done one by one, 20 containers take half a minute.
    """
    phases = [[t for t in targets if not t.network and "/" in t.address],
              [t for t in targets if not t.network and "/" not in t.address],
              [t for t in targets if t.network]]
    for n, phase in enumerate(phases):
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(destroy_target, conns[t.uri], t, **flags): t for t in phase}
            for fut in as_completed(futures):
                fut.result()
                t = futures[fut]
                out.print(f"{t.address}: {t.result}", markup=False)
        if n == 0:
            # The connections to guests' daemons are done with: closed now, not after their
            # guests are forced off, when closing waits for ssh to notice a dead peer
            # (ServerAliveInterval x 3: 35 s per destroy of a site with nested containers).
            later = {t.uri for t in phases[1] + phases[2]}
            for uri in {t.uri for t in phase} - later:
                conns[uri].close()


@app.command("destroy")
def destroy_cmd(targets: list[str] = typer.Argument(..., metavar="INVENTORY | NAME...",
                                                   autocompletion=complete_domain),
                yes: bool = YES,
                delete_rootfs: bool = typer.Option(False, "--delete-rootfs", help="Also delete "
                                                   "the trees and disk images virtmix made."),
                force_foreign: bool = typer.Option(False, "--force-foreign", help="Also remove "
                                                   "domains virtmix did not define."),
                keep_disks: bool = typer.Option(False, "--keep-disks", help="Keep the disks "
                                                "and files apply made for guests and the "
                                                "trees pushed into guests (default: deleted)."),
                keep_snapshots: bool = typer.Option(
                    False, "--keep-snapshots", help="With --delete-rootfs: keep the "
                    "containers' snapshots (default: deleted with their trees)."),
                force: bool = typer.Option(False, "--force", help="Force running domains off "
                                           "at once (default: ask them to shut down first)."),
                timeout: float = typer.Option(None, "--timeout", "-t", metavar="SECONDS",
                                              help="Seconds a domain gets to shut down before "
                                              "it is forced off (default: "
                                              "settings.shutdown_timeout, 30)."),
                jobs: int = typer.Option(8, "--jobs", "-j", min=1,
                                         help="Domains destroyed at once."),
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
        _confirm(f"Destroy these {len(present)}" + (
            " and delete their root filesystems" + ("" if keep_snapshots else
                                                     " and snapshots") + " permanently"
            if trees else "") + "?", yes)
        locks = _lock_targets(site) if site else []
        locks += [("uri", t.uri) for t in present]
        with locked(locks, purpose="destroy", wait=wait, timeout=lock_timeout,
                    on_wait=lambda m: err.print(f"virtmix: {m}")):
            if timeout is None:
                timeout = site.inventory.settings.shutdown_timeout if site else 30.0
            _destroy_all(present, conns, jobs=jobs, force_foreign=force_foreign,
                         delete_rootfs=delete_rootfs, keep_disks=keep_disks, force=force,
                         timeout=timeout, keep_snapshots=keep_snapshots)
            _say_kept(site, present)
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
