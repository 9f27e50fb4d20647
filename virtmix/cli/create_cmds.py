"""`virtmix create`: a container from a template, like `lxc-create -t debian` (issue 5).

Exit codes: 0 made, 2 bad options, 5 libvirt refused, 6 unknown network, 7 rootfs build
failed, 9 the name is taken (a domain or a tree; nothing is made).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from virtmix.cli.base import OPTIONS, QUIET_OPTION, app, default_uri, err, out
from virtmix.create.workflow import (
    CreateRequest,
    CreateResult,
    Report,
    create,
    locked_root_note,
)
from virtmix.errors import UsageError

# How far into the root filesystem step a builder message is (mmdebstrap's and the rootfs
# code's own stages, in order), so the bar moves during the one long step.
STAGES = (("apt-get update", 0.05), ("downloading", 0.1), ("extracting", 0.25),
          ("installing essential", 0.35), ("installing remaining", 0.55),
          ("cleaning", 0.8), ("site hook", 0.82), ("shifting", 0.85), ("cloning", 0.95))


class BarReport(Report):
    """Rich progress bars on a terminal; one plain line per step otherwise."""

    def __init__(self, total: int, live: bool) -> None:
        self.live = live
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            TimeElapsedColumn(), console=err, transient=True)
        self.task = self.bar.add_task("create", total=total)
        self.step = ""
        self.done = 0

    def begin(self, step: str) -> None:
        self.step = step
        if self.live:
            self.bar.update(self.task, description=step)
        else:
            err.print(f"{step}...", markup=False)

    def detail(self, text: str) -> None:
        if not self.live:
            return
        frac = next((f for word, f in STAGES if word in text), None)
        if frac is not None:
            self.bar.update(self.task, completed=self.done + frac)
        self.bar.update(self.task, description=f"{self.step}: {text}"[:70])

    def end(self, step: str, seconds: float) -> None:
        self.done += 1
        if self.live:
            self.bar.update(self.task, completed=self.done)
            self.bar.console.print(f"{step}: done in {seconds:.1f}s", markup=False)
        else:
            err.print(f"{step}: done in {seconds:.1f}s", markup=False)


def _ssh_keys(files: list[Path], texts: list[str]) -> tuple[str, ...]:
    keys = list(texts)
    for f in files:
        try:
            lines = f.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"--ssh-key {f}: cannot read it ({exc.strerror})") from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        if not found:
            raise UsageError(f"--ssh-key {f}: no public key in it")
        keys += found
    return tuple(keys)


def _print_result(r: CreateResult) -> None:
    if not OPTIONS.quiet:
        how = "privileged" if r.privileged else "unprivileged"
        out.print(f"{r.name}: created on {r.uri} in {r.seconds:.1f}s ({how}, {r.method} clone "
                  f"of {r.cache_entry}){', started' if r.started else ''}", markup=False)
        out.print(f"  tree: {r.tree}", markup=False)
        out.print(f"  log:  {r.log}", markup=False)
    if r.password:
        # Shown this once: it is in no log, definition or metadata (only in a 0600 file).
        out.print(f"root password of {r.name} (shown once; kept in {r.password_file}, mode "
                  f"0600): {r.password}", markup=False)
    if not OPTIONS.quiet and not r.started and r.start_error is None:
        out.print(f"start it with: virtmix start {r.name}", markup=False)


@app.command("create")
def create_container(
    name: str = typer.Argument(..., metavar="NAME", help="The container's domain name."),
    template: str = typer.Option("debian", "--template", "-t", help="What to build: debian."),
    suite: str = typer.Option("bookworm", "--suite", help="Debian suite (bookworm, trixie)."),
    variant: str = typer.Option("minbase", "--variant", help="mmdebstrap/debootstrap variant."),
    package: list[str] = typer.Option(None, "--package", "-p", help="Extra package "
                                      "(repeatable; part of the cached base)."),
    hook: Path = typer.Option(None, "--hook", help="Site script run in the base tree (chroot)."),
    ssh_key: list[Path] = typer.Option(None, "--ssh-key", metavar="FILE", help="Public key "
                                       "file for root (repeatable)."),
    ssh_key_text: list[str] = typer.Option(None, "--ssh-key-text", metavar="KEY",
                                           help="A public key for root, given inline."),
    root_password: str = typer.Option(None, "--root-password", metavar="generate",
                                      help="'generate': a random root password, shown once. "
                                      "Without it (and without keys) root is locked."),
    sshd: bool = typer.Option(False, "--sshd", help="Install and enable openssh-server."),
    hostname: str = typer.Option(None, "--hostname", help="Default: NAME."),
    memory: str = typer.Option(None, "--memory", "-m", help="Memory cap, e.g. 512MiB."),
    cpuset: str = typer.Option(None, "--cpuset", help="CPUs it may use, e.g. 0 or 0-1."),
    shares: int = typer.Option(None, "--shares", help="cpu.shares (default 1024)."),
    network: str = typer.Option(None, "--network", help="A libvirt network for eth0."),
    bridge: str = typer.Option(None, "--bridge", help="An existing host bridge for eth0."),
    ipv4: str = typer.Option(None, "--ipv4", metavar="CIDR", help="Static address of eth0 "
                             "(default DHCP)."),
    gateway: str = typer.Option(None, "--gateway", help="Default route of eth0."),
    privileged: bool = typer.Option(False, "--privileged", help="No user namespace: root in "
                                    "it is root on the host (not advised)."),
    connect: str = typer.Option(None, "--connect", "-c", metavar="URI",
                                help="libvirt URI (default: the global -c, else lxc:///system)."),
    storage: Path = typer.Option(None, "--storage", metavar="DIR", envvar="VIRTMIX_STORAGE",
                                 help="Storage directory (default /var/lib/virtmix)."),
    mirror: str = typer.Option(None, "--mirror", help="Debian mirror (default: host's apt "
                               "sources)."),
    start: bool = typer.Option(False, "--start", help="Start it once defined."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Build a container's tree and define it, like lxc-create -t debian.

    The Debian base is built once and cached; the container gets an overlay (or reflink,
    or copy) clone with its own identity. Unprivileged unless --privileged. An existing
    NAME is refused (exit 9) and nothing is made. Remove it with `virtmix destroy NAME`."""
    if root_password not in (None, "generate"):
        raise UsageError("--root-password: only 'generate' is accepted (a password given on "
                         "the command line would end up in shell history and process lists)")
    req = CreateRequest(
        name=name, uri=connect or default_uri(), template=template, suite=suite,
        variant=variant, packages=tuple(package or ()),
        hook=str(hook.absolute()) if hook else None,
        ssh_keys=_ssh_keys(list(ssh_key or ()), list(ssh_key_text or ())),
        root_password=root_password == "generate", sshd=sshd, hostname=hostname,
        memory=memory, cpuset=cpuset, shares=shares, network=network, bridge=bridge,
        ipv4=ipv4, gateway=gateway, privileged=privileged,
        storage_dir=str(storage) if storage else None, mirror=mirror, start=start)
    if privileged:
        err.print(f"virtmix: warning: {name} is privileged: root in it is root on the host",
                  markup=False)
    if OPTIONS.quiet:
        result = create(req)
    else:
        report = BarReport(3 if start else 2, live=err.is_terminal)
        if report.live:
            with report.bar:
                result = create(req, report)
        else:
            result = create(req, report)
    _print_result(result)
    note = locked_root_note(req)
    if note and not OPTIONS.quiet:
        err.print(f"virtmix: note: {note}", markup=False)
    if result.start_error is not None:
        exc = result.start_error
        exc.hint = exc.hint or (f"{name} is created; fix the cause, then `virtmix start {name}`"
                                f" (or `virtmix destroy {name}`)")
        raise exc
