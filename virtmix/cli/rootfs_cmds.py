"""`virtmix rootfs`: build, list and prune cached Debian base trees."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from virtmix.errors import UsageError, VirtmixError
from virtmix.rootfs import IDMAP, Storage, list_cache, prune_cache
from virtmix.rootfs.build import ensure_lower
from virtmix.rootfs.spec import RootfsSpec

app = typer.Typer(
    help="Build, list and prune the cached Debian base trees containers are cloned from.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
    rich_markup_mode=None,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STORAGE_OPTION = typer.Option(
    None, "--storage", metavar="DIR", envvar="VIRTMIX_STORAGE",
    help="Storage directory (default /var/lib/virtmix, or the inventory's storage_dir).")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress output.")


def _global_quiet() -> bool:
    # When registered under the main app, its --quiet applies too.
    with contextlib.suppress(ImportError):
        from virtmix.cli.base import OPTIONS
        return bool(OPTIONS.quiet)
    return False


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn VirtmixError into its exit code inside the command (so CliRunner sees it)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VirtmixError as exc:
            err.print(f"virtmix: error: {exc.message}", markup=False)
            if exc.hint:
                err.print(f"virtmix: hint: {exc.hint}", markup=False)
            raise typer.Exit(exc.exit_code) from None
    return wrapper


@contextlib.contextmanager
def progress_line(quiet: bool) -> Iterator[Callable[[str], None] | None]:
    """A rich spinner showing the builder's current step; None when quiet or not a tty."""
    if quiet or _global_quiet() or not err.is_terminal:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda msg: bar.update(task, description=msg[:100])


def _spec_from_inventory(inventory: Path, name: str) -> tuple[RootfsSpec, bool, str | None]:
    from virtmix.nesting.guests import open_site as load_site
    from virtmix.rootfs.from_model import setup_from_model, spec_from_model

    site = load_site(inventory)
    entry = site.find(name)
    if entry.kind != "container":
        raise UsageError(f"{inventory}: {name} is a guest; rootfs build is for containers")
    settings = site.inventory.settings
    spec = spec_from_model(entry.spec.rootfs, base_dir=site.path.parent, mirror=settings.mirror)
    if setup_from_model(entry.name, entry.spec).sshd:
        spec = spec.with_packages("openssh-server")
    return spec, entry.spec.privileged, settings.storage_dir


@app.command("build")
@handle_errors
def build_rootfs(
    inventory: Path = typer.Argument(None, help="Inventory file (then NAME is required)."),
    name: str = typer.Argument(None, help="Container entry whose rootfs to build."),
    distro: str = typer.Option("debian", "--distro"),
    suite: str = typer.Option("bookworm", "--suite"),
    variant: str = typer.Option("minbase", "--variant"),
    component: list[str] = typer.Option(None, "--component", help="Repeatable; default main."),
    package: list[str] = typer.Option(None, "--package", help="Extra package (repeatable)."),
    arch: str = typer.Option(None, "--arch", help="dpkg architecture (default: the host's)."),
    mirror: str = typer.Option(None, "--mirror", help="Mirror URI (default: host apt sources)."),
    hook: Path = typer.Option(None, "--hook", help="Site script run in the tree (chroot)."),
    privileged: bool = typer.Option(False, "--privileged",
                                    help="Skip the uid-shifted copy for unprivileged use."),
    storage: Path = STORAGE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Build (or find in the cache) a base tree, from an inventory entry or from flags."""
    storage_dir: str | None = str(storage) if storage else None
    if inventory is not None:
        if name is None:
            raise UsageError("rootfs build INVENTORY NAME: NAME is missing")
        spec, entry_privileged, inv_storage = _spec_from_inventory(inventory, name)
        privileged = privileged or entry_privileged
        storage_dir = storage_dir or inv_storage
    else:
        if hook is not None and not hook.is_file():
            raise UsageError(f"--hook {hook}: not a file")
        spec = RootfsSpec(distro=distro, suite=suite, variant=variant,
                          components=tuple(component or ("main",)),
                          packages=tuple(package or ()), architecture=arch, mirror=mirror,
                          hook=str(hook.absolute()) if hook else None)
    if privileged and inventory is not None:
        err.print(f"virtmix: warning: {name} is privileged: root in it is root on the host",
                  markup=False)
    st = Storage(storage_dir)
    with progress_line(quiet) as progress:
        lower = ensure_lower(spec, st, None if privileged else IDMAP[1], progress)
    meta = json.loads((lower.path / "entry.json").read_text())
    word = "cached" if lower.cached else f"built in {meta.get('seconds', '?')} s"
    out.print(f"{lower.entry}: {word}", markup=False)
    out.print(f"  tree: {lower.tree}", markup=False)


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


@app.command("ls")
@handle_errors
def list_rootfs(
    storage: Path = STORAGE_OPTION,
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
) -> None:
    """List cached base trees, their size and the containers cloned from them."""
    if output not in ("table", "json"):
        raise UsageError(f"--output {output!r}: expected table or json")
    entries = list_cache(Storage(str(storage) if storage else None))
    if output == "json":
        sys.stdout.write(json.dumps([e.as_dict() for e in entries], indent=2) + "\n")
        return
    if not entries:
        out.print("no cached trees")
        return
    rows = [("ENTRY", "KIND", "SUITE", "VARIANT", "ARCH", "PACKAGES", "SIZE", "BUILT",
             "USED BY")]
    rows += [(e.entry, e.kind, e.suite, e.variant, e.architecture, ",".join(e.packages) or "-",
              _size(e.size_bytes), e.built[:16], ",".join(e.used_by) or "-") for e in entries]
    # Plain columns like lxc-ls: entry names are long keys meant to be copied, never cut.
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         + "\n")


@app.command("prune")
@handle_errors
def prune_rootfs(
    storage: Path = STORAGE_OPTION,
    all_: bool = typer.Option(False, "--all",
                              help="Also entries copy/reflink clones came from (overlay "
                                   "lowers are always kept)."),
    entry: list[str] = typer.Option(None, "--entry", help="Only this entry (repeatable)."),
) -> None:
    """Delete cached base trees no container needs, and leftovers of killed builds."""
    removed = prune_cache(Storage(str(storage) if storage else None), keep_used=not all_,
                          entries=list(entry) if entry else None)
    for name in removed:
        out.print(f"removed {name}", markup=False)
    if not removed:
        out.print("nothing to prune")
