"""The typer application object and what every command shares: errors, output, connection.

Only this layer turns exceptions into exit codes (see virtmix/errors.py for the table).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import typer
import typer.core
from rich.console import Console

from virtmix.errors import VirtmixError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    table = "table"
    json = "json"


@dataclass
class Options:
    """Global options, set by the app callback."""

    connect: str | None = None
    inventory: str | None = None
    debug: bool = False
    quiet: bool = False
    allow_uri_commands: bool = False


OPTIONS = Options()


# Global options: their words, and which take a value.
GLOBAL_VALUED = frozenset({"-c", "--connect", "-i", "--inventory"})
GLOBAL_FLAGS = frozenset({"-q", "--quiet", "--debug", "--allow-uri-commands"})
# Verbs whose trailing words are a command to run inside (their parsing stops there): how
# many positionals they take before it, and their own options that take a value.
_COMMAND_VERBS = {"attach": (1, frozenset()),
                  "execute": (0, frozenset({"--rootfs", "--name", "-n", "--memory"}))}


def _is_global(word: str) -> bool:
    return word in GLOBAL_VALUED or word in GLOBAL_FLAGS or word.startswith(
        ("--connect=", "--inventory="))


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options written after the verb to before it, so they work in both
    places on every verb: `virtmix cgroup c1 cpu.shares --quiet` is `virtmix --quiet cgroup
    c1 cpu.shares` (not the value "--quiet"). Nothing after `--` moves, nor anything from
    the command of attach/execute on (`attach c1 ps -q`: -q is ps's)."""
    i = 0
    while i < len(args) and _is_global(args[i]):  # the leading global options
        i += 2 if args[i] in GLOBAL_VALUED else 1
    if i >= len(args) or args[i].startswith("-"):
        return args
    verb, head, rest = args[i], args[:i + 1], args[i + 1:]
    positionals, own_valued = _COMMAND_VERBS.get(verb, (None, frozenset()))
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        word = rest[j]
        if word == "--":
            kept += rest[j:]
            break
        if _is_global(word):
            take = 2 if word in GLOBAL_VALUED else 1
            moved += rest[j:j + take]
            j += take
            continue
        kept.append(word)
        if word in own_valued and j + 1 < len(rest):
            kept.append(rest[j + 1])
            j += 1
        elif positionals is not None and not word.startswith("-"):
            positionals -= 1
            if positionals < 0:  # the command to run inside starts here
                kept += rest[j + 1:]
                break
        j += 1
    return head[:-1] + moved + [verb] + kept


class VirtmixGroup(typer.core.TyperGroup):
    """Turns VirtmixError into its exit code and one clear line, inside the click command.

    Doing it here (not around app()) means typer's CliRunner sees the same exit codes as a
    shell. Unexpected exceptions exit 1; their traceback only shows with --debug.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VirtmixError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if OPTIONS.debug:
                raise
            err.print(f"virtmix: unexpected error: {type(exc).__name__}: {exc}", markup=False)
            err.print("virtmix: this is a bug; run again with --debug for a traceback",
                      markup=False)
            raise typer.Exit(1) from None


# What a command leaves for the process's exit instead of freeing it object by object:
# validate's loaded site (85,000 containers: 0.2-0.3 s of deallocation and interpreter
# teardown, after the answer is printed). The `virtmix` entry point (virtmix.cli.main) ends
# the process right after a successful command that left something here.
LEFT_FOR_EXIT: list[object] = []


def leave_for_exit(*objects: object) -> None:
    LEFT_FOR_EXIT[:] = objects  # replaces what an earlier call left (in-process tests)


def report_error(exc: VirtmixError) -> None:
    err.print(f"virtmix: error: {exc.message}", markup=False)
    if exc.hint:
        err.print(f"virtmix: hint: {exc.hint}", markup=False)


app = typer.Typer(
    cls=VirtmixGroup,
    help="virtmix: provision KVM guests and LXC containers on libvirt from one inventory.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold URIs and secrets
    rich_markup_mode=None,
)


@app.callback()
def _global(
    connect: str = typer.Option(None, "--connect", "-c", metavar="URI",
                                help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, as virsh)."),
    inventory: str = typer.Option(None, "--inventory", "-i", metavar="FILE",
                                  envvar="VIRTMIX_INVENTORY",
                                  help="Inventory for admin verbs (hosts, nested containers)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of unexpected errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    allow_uri_commands: bool = typer.Option(
        False, "--allow-uri-commands",
        help="Accept inventory URIs that choose a command to run: libvirt's ext transport, "
        "ssh command=/socket=/netcat=, a host starting with '-' (see SECURITY.md)."),
) -> None:
    from virtmix.inventory import uris

    uris.ALLOW_URI_COMMANDS = OPTIONS.allow_uri_commands = allow_uri_commands
    OPTIONS.connect = connect
    OPTIONS.inventory = inventory
    OPTIONS.debug = debug
    OPTIONS.quiet = quiet


def _quiet_after_verb(quiet: bool) -> bool:
    OPTIONS.quiet = OPTIONS.quiet or quiet
    return quiet


# `virtmix apply X --quiet` as well as `virtmix --quiet apply X`, on the verbs that report
# progress; the parameter is only there for this callback.
QUIET_OPTION = typer.Option(False, "--quiet", "-q", callback=_quiet_after_verb,
                            help="No progress output (as virtmix --quiet).")


def print_warnings(site: Any) -> None:
    """The inventory's legal but dangerous settings (SECURITY.md), one line each on stderr."""
    for warning in site.warnings:
        err.print(f"virtmix: warning: {warning}", markup=False)


def _allow_uri_commands_after_verb(allow: bool) -> bool:
    from virtmix.inventory import uris

    if allow:
        uris.ALLOW_URI_COMMANDS = OPTIONS.allow_uri_commands = True
    return allow


# `virtmix plan X --allow-uri-commands` as well as `virtmix --allow-uri-commands plan X`, on
# the verbs that load an inventory.
ALLOW_URI_COMMANDS_OPTION = typer.Option(
    False, "--allow-uri-commands", callback=_allow_uri_commands_after_verb,
    help="Accept inventory URIs that choose a command to run (as virtmix --allow-uri-commands).")


def default_uri() -> str:
    """The LXC connection for verbs that make a container without an inventory (create):
    -c, then $LIBVIRT_DEFAULT_URI as virsh, except that a variable naming this machine's
    QEMU driver (`qemu:///system`, set for virsh) means this machine's LXC driver."""
    env = os.environ.get("LIBVIRT_DEFAULT_URI")
    if env in ("qemu:///system", "qemu:///", "qemu://"):
        env = "lxc:///system"
    return OPTIONS.connect or env or "lxc:///system"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


OUTPUT_OPTION = typer.Option(Output.table, "--output", "-o", help="table or json.")
