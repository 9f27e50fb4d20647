"""CLI for guests that host containers: `image build|ls|rm` and `inventory ansible`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from virtmix.cli.base import OPTIONS, QUIET_OPTION, Output, app, err, out, print_json
from virtmix.errors import NotFoundError, UsageError
from virtmix.util.files import write_atomic

image_app = typer.Typer(help="Build, list and remove the cached guest images (LXC hosts).",
                        no_args_is_help=True, rich_markup_mode=None)
inventory_app = typer.Typer(help="Export the inventory for other tools.", no_args_is_help=True,
                            rich_markup_mode=None)
app.add_typer(image_app, name="image")
app.add_typer(inventory_app, name="inventory")

STORAGE = typer.Option(None, "--storage", metavar="DIR", envvar="VIRTMIX_STORAGE",
                       help="Storage directory (default: the inventory's storage_dir, "
                            "else /var/lib/virtmix).")


def _progress(line: str) -> None:
    if not OPTIONS.quiet:
        err.print(f"virtmix: {line}", markup=False)


def _storage(storage: str | None, site=None):
    from virtmix.rootfs.storage import Storage

    if storage:
        return Storage(storage)
    if site is None and OPTIONS.inventory:  # -i INVENTORY: its storage_dir
        from virtmix.nesting.guests import open_site as load_site

        site = load_site(OPTIONS.inventory)
    return Storage(site.inventory.settings.storage_dir) if site is not None else Storage()


@image_app.command("build")
def build_image(
    inventory: Path = typer.Argument(None, help="Build the images of this inventory's guests."),
    guest: list[str] = typer.Option([], "--guest", "-g", help="Only these guests."),
    suite: str = typer.Option("bookworm", help="Without an inventory: Debian suite."),
    package: list[str] = typer.Option([], "--package", "-p", help="Extra package (repeat)."),
    storage: str = STORAGE,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Build (or find in the cache) guest images, like apply does before a guest starts."""
    from virtmix.images import ImageSpec, ensure_image, spec_from_model

    specs: list[tuple[str, ImageSpec]] = []
    site = None
    if inventory is not None:
        from virtmix.nesting.guests import open_site as load_site

        site = load_site(inventory)
        for e in site.entries:
            if e.kind != "guest" or (guest and e.name not in guest):
                continue
            image = e.spec.image
            if e.spec.boot is None and (image is not None or e.spec.containers) and \
                    (image is None or not image.path):
                specs.append((e.name, spec_from_model(image, site.inventory.settings.mirror)))
        if guest and not specs:
            raise NotFoundError(f"no guest with a virtmix-built image named {', '.join(guest)} "
                                f"in {inventory}")
    else:
        if guest:
            raise UsageError("--guest needs an INVENTORY")
        specs.append(("-", ImageSpec(suite=suite, packages=tuple(package))))
    st = _storage(storage, site)
    for name, spec in specs:
        img = ensure_image(spec, st, _progress)
        how = "cached" if img.cached else f"built in {img.seconds:.0f}s"
        out.print(f"{name}: {img.key} ({how}) {img.base}", markup=False)


@image_app.command("ls")
def list_images_cmd(storage: str = STORAGE, output: Output = typer.Option(
        Output.table, "--output", "-o", help="table or json.")) -> None:
    """The cached guest images, the guests whose overlay uses each, and their sizes."""
    from virtmix.images import list_images
    from virtmix.images.guest import guests_using

    st = _storage(storage)
    rows = []
    for img in list_images(st):
        meta = img.meta
        size = img.base.stat().st_blocks * 512
        rows.append({"key": img.key, "suite": meta["spec"]["suite"], "kernel": meta["kernel"],
                     "built": meta["built"], "build_seconds": meta["seconds"],
                     "disk_mib": round(size / 2**20), "guests": guests_using(st, img.key),
                     "packages": meta["spec"]["packages"]})
    if output == Output.json:
        print_json(rows)
        return
    if not rows:
        out.print(f"no guest images in {st.root}/images", markup=False)
    for r in rows:
        out.print(f"{r['key']}  {r['suite']}  kernel {r['kernel']}  {r['disk_mib']} MiB  "
                  f"built {r['built']} in {r['build_seconds']}s  guests: "
                  f"{', '.join(r['guests']) or '-'}", markup=False)


@image_app.command("rm")
def remove_image_cmd(key: str, storage: str = STORAGE) -> None:
    """Delete a cached image (refused while a guest's overlay is based on it)."""
    from virtmix.images import remove_image

    remove_image(_storage(storage), key)
    out.print(f"removed {key}", markup=False)


@image_app.command("prune")
def prune_images_cmd(storage: str = STORAGE) -> None:
    """Delete what interrupted builds left behind (never a complete image)."""
    from virtmix.images.build import prune_leftovers

    removed = prune_leftovers(_storage(storage))
    out.print(f"removed {len(removed)} leftover build(s)" +
              (f": {', '.join(removed)}" if removed else ""), markup=False)


@inventory_app.command("ansible")
def ansible_inventory_cmd(
    inventory: Path = typer.Argument(..., help="The virtmix inventory to export."),
    # -o is the output format, as on every other verb (`-o json`); the file is --out.
    fmt: str = typer.Option("yaml", "--output", "-o", "--format", "-f", help="yaml or json."),
    dest: Path = typer.Option(None, "--out", help="Write to this file (default stdout)."),
) -> None:
    """An Ansible inventory of the site: hosts, guests and containers with virtmix_* vars.
    Containers use the virtmix.site.lxc connection (the collection in
    ansible_collections/virtmix/site), guests on virtmix's images ssh with its pinned keys."""
    from virtmix.handoff.ansible import render
    from virtmix.nesting.guests import open_site as load_site

    if fmt not in ("yaml", "json"):
        raise UsageError(f"--output {fmt!r}: expected yaml or json")
    text = render(load_site(inventory), fmt)
    if dest is None:
        sys.stdout.write(text)
    else:
        write_atomic(dest, text.encode())
        _progress(f"wrote {dest}")


__all__ = ["ansible_inventory_cmd", "build_image", "list_images_cmd", "prune_images_cmd",
           "remove_image_cmd"]
