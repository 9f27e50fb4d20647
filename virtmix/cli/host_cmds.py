"""Estate and host commands: import (existing domains and classic LXC -> inventory), doctor."""

from __future__ import annotations

from pathlib import Path

import typer

from virtmix.admin import doctor as doctor_mod
from virtmix.admin import importer
from virtmix.cli.admin_cmds import admin_session
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, QUIET_OPTION, Output, app, err, out, print_json
from virtmix.errors import EXIT_DOCTOR_FAILED, UsageError
from virtmix.hosts import is_local, shares_are_weights
from virtmix.util.files import write_atomic

DOCTOR_FAILED = EXIT_DOCTOR_FAILED  # exit code of `doctor` when a check fails
MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@app.command("import")
def import_domains(
    sources: list[str] = typer.Argument(None, metavar="SOURCE", help="A libvirt "
                                        "URI, and/or classic LXC containers: "
                                        "/var/lib/lxc/NAME/config, /var/lib/lxc/NAME or "
                                        "/var/lib/lxc. Only paths: only those containers."),
    names: list[str] = typer.Option(None, "--name", "-n", help="Only these (repeatable)."),
    lxc_path: list[Path] = typer.Option(None, "--lxc-path", help="Also import classic LXC "
                                        "containers from here (as a LXC_PATH source)."),
    output_file: Path = typer.Option(None, "--output-file", "-o", help="Write the inventory "
                                     "here instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing -o file."),
    connect: str = typer.Option(None, "--connect", "-c", metavar="URI",
                                help="The libvirt URI to import from (as the global -c)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Write inventory entries for the domains of a libvirt URI (an argument or -c; default
    lxc:///system and qemu:///system) and for classic LXC containers (path arguments or
    --lxc-path: a config file, a container's directory or an lxcpath), in the inventory
    format. Given only paths, it imports only those containers.

    The result loads with `virtmix validate`; `virtmix apply --adopt` on it takes the
    domains over without changing them. What cannot be carried over is listed as comments
    at the top (and on stderr)."""
    uris = [s for s in sources or [] if "://" in s]
    paths = [Path(s) for s in sources or [] if "://" not in s] + list(lxc_path or [])
    if len(set(uris + ([connect] if connect else []))) > 1:
        raise UsageError("import reads one libvirt URI at a time: "
                         + ", ".join(dict.fromkeys(uris + ([connect] if connect else []))))
    if uris or connect:
        OPTIONS.connect = (uris or [connect])[0]
    # Only paths given: the admin points at classic containers, not at libvirt's domains.
    from_libvirt = bool(uris or connect or OPTIONS.connect) or not sources
    if output_file is not None and output_file.exists() and not force:
        raise UsageError(f"{output_file} exists; use --force to overwrite it")
    with admin_session() as session:
        places = session.places() if from_libvirt else []
        # only paths given: the classic containers are on this machine
        v2 = all(shares_are_weights(p.uri, p.parent) for p in places) if places else \
            shares_are_weights("lxc:///system", None)
        host, uri, lxc_uri, items = importer.collect(
            session, set(names) if names else None, paths, v2, libvirt_domains=from_libvirt)
    source = ", ".join([p.uri for p in places] + [str(p) for p in paths])
    doc = importer.inventory_document(host, uri, lxc_uri, "v2" if v2 else "v1", items,
                                      site=importer.described_owner(items)[0])
    importer.check_roundtrip(importer.dump(doc, items, source), items)
    text = importer.dump(doc, items, source)
    for item in items:
        for note in item.notes:
            err.print(f"virtmix: note: {item.name}: {note}", markup=False)
    if output_file is None:
        typer.echo(text, nl=False)
        return
    write_atomic(output_file, text.encode())
    if not OPTIONS.quiet:
        err.print(f"virtmix: wrote {len(items)} entries to {output_file}", markup=False)


@app.command("doctor")
def doctor(
    uri: str = typer.Argument(None, help="Check this URI (default: -c, or lxc:///system "
                              "and qemu:///system)."),
    storage_dir: str = typer.Option(None, "--storage-dir", help="Where virtmix keeps trees "
                                    "and images (default: the inventory's, or "
                                    "/var/lib/virtmix)."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Host preflight: libvirt drivers, /dev/kvm, cgroup layout, user namespaces, overlayfs,
    inotify limits, free storage. Each line: ok / warn / FAIL and what to do.
    Exits 12 when a check fails, 0 otherwise (warnings included)."""
    uri = uri or OPTIONS.connect
    uris = [uri] if uri else ["lxc:///system", "qemu:///system"]
    if storage_dir is None:
        storage_dir = "/var/lib/virtmix"
        if OPTIONS.inventory:
            from virtmix.inventory.load import load_site

            storage_dir = load_site(Path(OPTIONS.inventory)).inventory.settings.storage_dir
    checks = doctor_mod.run_checks(uris, storage_dir, all(is_local(u) for u in uris))
    failed = [c for c in checks if c.status == doctor_mod.FAIL]
    if output == Output.json:
        print_json([c.as_dict() for c in checks])
    else:
        for c in checks:
            line = f"{MARK[c.status]}  {c.name}: {c.detail}"
            out.print(line + (f"\n      -> {c.fix}" if c.fix else ""), markup=False)
        warned = sum(c.status == doctor_mod.WARN for c in checks)
        out.print(f"{len(checks)} checks: {len(failed)} failed, {warned} warnings",
                  markup=False)
    if failed:
        raise typer.Exit(DOCTOR_FAILED)
