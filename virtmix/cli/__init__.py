"""virtmix's command line: one typer app; each module registers one group of commands."""

from __future__ import annotations

from . import inventory_cmds  # noqa: F401 - registers validate, render, schema, explain
from . import apply_cmds  # noqa: F401 - plan, apply, destroy (issue 3)
from . import admin_cmds, admin_run_cmds, host_cmds  # noqa: F401 - lxc-* verbs (issue 4)
from . import nesting_cmds  # noqa: F401 - image build/ls/rm, inventory ansible (issue 6)
from . import create_cmds  # noqa: F401 - create (issue 5's seed workflow)
from .app import app


def main() -> None:
    app(prog_name="virtmix")


__all__ = ["app", "main"]
