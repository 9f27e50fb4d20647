"""Inventory commands: validate, render, schema, explain (no libvirt connection needed)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from virtmix.cli.base import (
    ALLOW_URI_COMMANDS_OPTION,
    OUTPUT_OPTION,
    Output,
    app,
    err,
    leave_for_exit,
    out,
    print_json,
    print_warnings,
)
from virtmix.cli.completers import complete_host
from virtmix.errors import NotFoundError, UsageError
from virtmix.inventory.load import load_site
from virtmix.inventory.model import inventory_json_schema
from virtmix.render.explain import explain_entry, rows_as_dicts
from virtmix.render.templates import EarlyRender, render_all, write_rendered

INVENTORY_ARG = typer.Argument(..., metavar="INVENTORY", help="The inventory YAML file.")


def rendered_and_checked(inventory: Path, host: str | None = None, name: str | None = None,
                         keep: bool = True):
    # validate of a whole inventory renders while the site-wide checks run (EarlyRender)
    early = EarlyRender() if not keep and host is None and name is None else None
    try:
        site = load_site(inventory, connecting=False,
                         on_entries=early.start if early else None).provisional()
        for missing in site.profiles.missing_dirs():  # provisional: placed on first host
            err.print(f"virtmix: warning: {site.path}: profiles_dir {missing} does not "
                      "exist (only the shipped profiles are used)", markup=False)
        print_warnings(site)
        if host is not None and host not in site.inventory.hosts:
            raise NotFoundError(f"no host named {host!r} in {site.path}",
                                hint="hosts: " + ", ".join(site.inventory.hosts))
        if name is not None:
            site.find(name)  # unknown: not found; a bare name in two guests: ambiguous
        items = early.finish(site) if early else None
    except BaseException:
        if early:
            early.abort()
        raise
    if items is None:
        items = render_all(site, host=host, name=name, check=True, keep=keep)
    return site, items


@app.command("validate")
def validate_inventory(inventory: Path = INVENTORY_ARG,
                       output: Output = OUTPUT_OPTION,
                       allow_uri_commands: bool = ALLOW_URI_COMMANDS_OPTION) -> None:
    """Check an inventory: YAML, keys, types, profiles, and every rendered document against
    libvirt's RelaxNG schema. Nothing is written."""
    site, items = rendered_and_checked(inventory, keep=False)  # counted, not printed
    leave_for_exit(site, items)  # not freed one object at a time once the answer is out
    counts = {k: sum(1 for i in items if i.kind == k) for k in ("container", "guest", "network")}
    if output == Output.json:
        print_json({"inventory": str(site.path), "valid": True, **counts,
                    "warnings": site.warnings})
        return
    out.print(f"{inventory}: valid ({counts['container']} containers, {counts['guest']} "
              f"guests, {counts['network']} networks on {len(site.inventory.hosts)} hosts)")


@app.command("render")
def render_inventory(
    inventory: Path = INVENTORY_ARG,
    host: str = typer.Option(None, "--host", help="Only this inventory host.",
                             autocompletion=complete_host),
    name: str = typer.Option(None, "--name", help="Only this entry (NAME or GUEST/NAME)."),
    out_dir: Path = typer.Option(None, "--out", help="Write NAME.xml files into this directory."),
    allow_uri_commands: bool = ALLOW_URI_COMMANDS_OPTION,
) -> None:
    """Render domain and network XML (stdout, or one NAME.xml per domain with --out)."""
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: not a directory (render writes one NAME.xml per "
                         "domain into it)")
    site, items = rendered_and_checked(inventory, host, name)
    if out_dir is not None:
        for path in write_rendered(items, out_dir):
            out.print(str(path))
        return
    for item in items:
        typer.echo(item.xml, nl=False)


@app.command("schema")
def print_schema() -> None:
    """Print the inventory's JSON Schema (for editors: yaml-language-server, VS Code)."""
    print_json(inventory_json_schema())


@app.command("explain")
def explain(inventory: Path = INVENTORY_ARG,
            name: str = typer.Argument(..., help="Entry name (or GUEST/NAME)."),
            output: Output = OUTPUT_OPTION,
            allow_uri_commands: bool = ALLOW_URI_COMMANDS_OPTION) -> None:
    """How each setting of an entry maps onto libvirt, where it came from, what has no effect."""
    loaded = load_site(inventory, connecting=False)
    site = loaded.provisional()
    entry = site.find(name)
    placed = next((u for u in loaded.unplaced if u.name == entry.name), None)
    if placed is not None:
        err.print(f"virtmix: {entry.name} is placed by plan/apply (on one of "
                  f"{', '.join(placed.candidates)}); shown as on the first", markup=False)
    rows, warnings = explain_entry(site, entry)
    if output == Output.json:
        print_json({"name": entry.address, "kind": entry.kind, "host": entry.host,
                    "uri": entry.uri, "profiles": list(entry.profiles),
                    "settings": rows_as_dicts(rows), "warnings": warnings})
        return
    chain = " -> ".join(entry.profiles) if entry.profiles else "no profile"
    out.print(f"{entry.address}: {entry.kind} on {entry.host} ({entry.uri}), profiles: {chain}")
    table = Table(show_lines=False)
    for col in ("setting", "value", "from", "libvirt", "notes"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.setting, r.value, r.source, r.libvirt, r.note)
    out.print(table)
    for w in warnings:
        out.print(f"warning: {w}")
