"""virtmix's command line: one typer app; each module registers one group of commands.

`virtmix VERB` imports only the module of VERB (importing every command module cost ~80 ms
of each call, a quarter of a no-op plan); `virtmix --help`, completion and anything this
cannot tell load them all, in the order of `virtmix --help`: inventory, declarative, lxc-*
verbs, estate. `from virtmix.cli import app` (tests, embedding) gets the complete app.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# In help order. Each module registers its commands on base.app when imported.
MODULES = (
    "inventory_cmds",  # validate, render, schema, explain
    "apply_cmds",      # plan, apply, destroy
    "create_cmds",     # create (lxc-create -t debian)
    "admin_cmds",      # ls, info, start, stop, freeze, unfreeze, console, cgroup
    "admin_run_cmds",  # ps, attach, execute
    "host_cmds",       # import, doctor
    "nesting_cmds",    # image build/ls/rm/prune, inventory ansible
    "rootfs_cmds",     # rootfs build/ls/prune
    "snapshot_cmds",   # snapshot [create]/ls/restore/rm, backup, restore
    "move_cmds",       # move
    "machines_cmds",   # metrics, watch
)
# Which module a verb lives in (tests/core/test_cli_lazy.py checks it against the app).
VERBS = {
    "validate": "inventory_cmds", "render": "inventory_cmds", "schema": "inventory_cmds",
    "explain": "inventory_cmds",
    "plan": "apply_cmds", "apply": "apply_cmds", "destroy": "apply_cmds",
    "create": "create_cmds",
    "ls": "admin_cmds", "info": "admin_cmds", "start": "admin_cmds", "stop": "admin_cmds",
    "freeze": "admin_cmds", "unfreeze": "admin_cmds", "console": "admin_cmds",
    "cgroup": "admin_cmds",
    "ps": "admin_run_cmds", "attach": "admin_run_cmds", "execute": "admin_run_cmds",
    "import": "host_cmds", "doctor": "host_cmds",
    "image": "nesting_cmds", "inventory": "nesting_cmds",
    "rootfs": "rootfs_cmds",
    "snapshot": "snapshot_cmds", "backup": "snapshot_cmds", "restore": "snapshot_cmds",
    "move": "move_cmds",
    "metrics": "machines_cmds", "watch": "machines_cmds",
}
# Global options that take a value (the verb is the first word that is neither).
_VALUED = {"-c", "--connect", "-i", "--inventory"}
_FLAGS = {"-q", "--quiet", "--debug", "--allow-uri-commands"}


def load(names: tuple[str, ...] | list[str] = MODULES):
    """Import command modules (registering their commands); the typer app."""
    from virtmix.cli import base

    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        if name == "rootfs_cmds" and not getattr(base, "_rootfs_added", False):
            base.app.add_typer(module.app, name="rootfs")
            base._rootfs_added = True  # type: ignore[attr-defined]
    return base.app


def verb_of(argv: list[str]) -> str | None:
    """The verb of a command line, or None when it has none or cannot be told."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif word in _FLAGS or word.startswith(("--connect=", "--inventory=")):
            continue
        elif word.startswith("-"):
            return None  # --help, --install-completion, an unknown option: load all
        else:
            return word
    return None


def __getattr__(name: str) -> Any:
    if name == "app":
        app = load()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _names_completion_shell(argv: list[str]) -> bool:
    """`--show-completion zsh` / `--install-completion bash`: the admin named the shell."""
    for i, arg in enumerate(argv):
        opt, eq, value = arg.partition("=")
        if opt in ("--show-completion", "--install-completion"):
            named = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            return named in COMPLETION_SHELLS
    return False


def main() -> None:
    if _names_completion_shell(sys.argv[1:]):
        # typer's completion options are flags that detect the shell from the process tree
        # (shellingham), so `--show-completion zsh` run from bash printed bash's script, and
        # under `sh -c` it failed ("Shell sh not supported"). With detection off they take
        # the shell as their value; without a named shell, detection stays.
        os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"
    completing = any(k.endswith("_COMPLETE") for k in os.environ)
    if completing and os.environ.get("_VIRTMIX_COMPLETE"):
        from virtmix.cli.complete import fast_complete

        if fast_complete("virtmix"):  # names, keys, hosts: before any command module loads
            return
    verb = None if completing else verb_of(sys.argv[1:])
    app = load([VERBS[verb]] if verb in VERBS else MODULES)
    try:
        app(prog_name="virtmix")
    except SystemExit as exc:
        from virtmix.cli.base import LEFT_FOR_EXIT

        if LEFT_FOR_EXIT and exc.code in (0, None):
            # Success, and a large structure left for the exit (leave_for_exit): output
            # flushed, the process ends without freeing it. Nothing else is pending then:
            # validate writes no file and has reaped its workers.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


__all__ = ["app", "load", "main", "verb_of"]
