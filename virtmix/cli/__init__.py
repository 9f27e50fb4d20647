"""virtmix's command line: one typer app; each module registers one group of commands.

The import order is the order of `virtmix --help`: inventory, declarative, lxc-* verbs, estate.
"""

# ruff: noqa: I001, F401 - imports for their side effect (registering commands), in help order
from __future__ import annotations

from . import inventory_cmds  # validate, render, schema, explain
from . import apply_cmds      # plan, apply, destroy
from . import create_cmds     # create (lxc-create -t debian)
from . import admin_cmds      # ls, info, start, stop, freeze, unfreeze, console, cgroup
from . import admin_run_cmds  # ps, attach, execute
from . import host_cmds       # import, doctor
from . import nesting_cmds    # image build/ls/rm, inventory ansible
from . import rootfs_cmds     # rootfs build/ls/prune
from .app import app

app.add_typer(rootfs_cmds.app, name="rootfs")


def main() -> None:
    app(prog_name="virtmix")


__all__ = ["app", "main"]
