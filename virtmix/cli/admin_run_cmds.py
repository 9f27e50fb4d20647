"""Admin verbs that run inside containers: ps, attach, execute (lxc-ps, lxc-attach,
lxc-execute). The exit code of attach and execute is the command's own."""

from __future__ import annotations

from pathlib import Path

import typer

from virtmix.admin import execute as execute_mod
from virtmix.admin import namespaces
from virtmix.backend import open_connection
from virtmix.cli.admin_cmds import NAME_ARG, admin_session, print_columns
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, Output, app, print_json
from virtmix.cli.completers import complete_domain
from virtmix.errors import UsageError
from virtmix.util.units import parse_size_kib

CMD_ARG = typer.Argument(None, metavar="-- CMD [ARG...]", help="The command (after --).")


def command_words(cmd: list[str] | None) -> list[str]:
    """The words after NAME; a leading `--` (needed before options of CMD) is dropped."""
    words = list(cmd or [])
    return words[1:] if words[:1] == ["--"] else words


KEEP_ENV = typer.Option(False, "--keep-env", help="Pass this environment on (default: a "
                        "clean PATH/HOME/TERM, as lxc-attach --clear-env).")


@app.command("ps")
def ps_containers(
    names: list[str] = typer.Argument(None, metavar="[NAME...]", help="Containers to show.",
                                      autocompletion=complete_domain),
    all_processes: bool = typer.Option(False, "--all", "-a", help="Every process of this "
                                       "host, '-' in the CONTAINER column for host ones."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Processes with the container they belong to (lxc-ps --lxc). Local containers only."""
    with admin_session() as session:
        rows = namespaces.ps(session, names or [], all_processes=all_processes)
    if output == Output.json:
        print_json([p.as_dict() for p in rows])
        return
    print_columns(["CONTAINER", "PID", "PPID", "UID", "CT-PID", "CMD"],
                  [[p.container, str(p.pid), str(p.ppid), str(p.uid), str(p.ns_pid), p.cmd]
                   for p in rows])


@app.command("attach", context_settings={"allow_interspersed_args": False})
def attach_container(name: str = NAME_ARG, cmd: list[str] = CMD_ARG,
                     keep_env: bool = KEEP_ENV) -> None:
    """Run a command inside a running container (lxc-attach); default /bin/sh.

    Enters all its namespaces (as its root user, also in <idmap> containers) and its
    cgroups; the command's exit code becomes virtmix's."""
    words = list(cmd or [])
    if "--" in words[1:] and words[:words.index("--")] and \
            all(w == "--keep-env" for w in words[:words.index("--")]):
        # `attach NAME --keep-env -- CMD`: options between NAME and -- are attach's own
        # (parsing stops at NAME so that CMD's options stay CMD's).
        keep_env, words = True, words[words.index("--"):]
    with admin_session() as session:
        code = namespaces.attach(session.find(name), command_words(words), keep_env=keep_env)
    raise typer.Exit(code)


@app.command("execute", context_settings={"allow_interspersed_args": False})
def execute_command(
    cmd: list[str] = CMD_ARG,
    rootfs: Path = typer.Option(None, "--rootfs", help="Root tree of the temporary "
                                "container (default: the host's /, as lxc-execute)."),
    name: str = typer.Option(None, "--name", "-n", help="Domain name (default "
                             "virtmix-exec-PID)."),
    memory: str = typer.Option("256MiB", "--memory", help="Memory limit."),
    keep_env: bool = KEEP_ENV,
) -> None:
    """Run one command in a temporary container, removed afterwards (lxc-execute).

    A transient LXC domain on -c URI (default lxc:///system) with its own PID, mount, IPC,
    UTS and network (loopback only) namespaces; the exit code is the command's."""
    uri = OPTIONS.connect or "lxc:///system"
    if rootfs is not None and not rootfs.is_dir():
        raise UsageError(f"--rootfs {rootfs}: not a directory")
    try:
        memory_kib = parse_size_kib(memory)
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    with open_connection(uri) as conn:
        if conn.driver != "lxc":
            raise UsageError(f"execute needs an LXC connection, {uri} is {conn.driver}")
        code = execute_mod.execute(conn, command_words(cmd), name=name, memory_kib=memory_kib,
                                   rootfs=str(rootfs.resolve()) if rootfs else None,
                                   keep_env=keep_env)
    raise typer.Exit(code)
