"""Facts about the machines that run domains, behind one small interface (`Host`).

A domain's URI decides which machine its processes live on: a local URI is this machine
(`hosts.local.LocalHost`, reading /proc and the cgroup filesystem directly), a
`driver+ssh://` URI of a guest virtmix built is that guest (`hosts.ssh.SshHost`, reading the
same files with a shell over ssh). apply, the admin verbs and nesting ask `host_for(uri)`
and use whichever comes back. The rules that need no machine are here too, each written once:
are shares weights where a domain runs (`cgroup_version_where`), and, re-exported from
util.uris, is a URI local or ssh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from virtmix.errors import UsageError
from virtmix.util.uris import is_local, is_ssh_uri

__all__ = ["Host", "cgroup_version_where", "host_for", "is_local", "is_ssh_uri",
           "require_local", "shares_are_weights"]

NESTED_CGROUPS = "v2"  # guests virtmix builds are pure cgroup v2 (their image boots so)


@runtime_checkable
class Host(Protocol):
    """A machine whose containers virtmix reaches beyond libvirt's API."""

    uri: str

    def cgroup_root(self) -> str:
        """Where the cgroup filesystem is mounted there (the hierarchies' common parent)."""
        ...

    def cgroup_version(self) -> str:
        """'v1' or 'v2': which hierarchy libvirt puts the domains' controllers in."""
        ...

    def shares_are_weights(self) -> bool:
        """Whether libvirt's <shares>/cpu_shares are cgroup v2 cpu.weight values there."""
        ...

    def run(self, argv: list[str], *, timeout: float = 60) -> str:
        """Run a command there; its stdout, or BackendError."""
        ...

    def init_pid(self, name: str, controller_pid: int | None = None) -> int:
        """pid (there) of a running container's init; never 0; StateError if none."""
        ...

    def read_cpuset(self, pid: int) -> str | None:
        """The cpuset of pid's cgroup (None: none or empty)."""
        ...

    def write_cpuset(self, pid: int, cpus: frozenset[int]) -> None:
        """Set the cpuset of pid's cgroup and of the cgroups below it."""
        ...

    def push_tree(self, src: Path, dest: str, marker: str) -> None:
        """Copy a tree of this machine to dest there (atomically), then touch marker."""
        ...


def require_local(uri: str, verb: str, name: str) -> None:
    if not is_local(uri):
        raise UsageError(
            f"{verb} {name}: the container runs behind {uri}, not on this machine",
            hint="run virtmix on that host (or inside the guest) for this verb")


def host_for(uri: str) -> Host:
    """The machine a URI's domains run on; UsageError for one virtmix cannot reach."""
    if is_local(uri):
        from virtmix.hosts.local import LocalHost

        return LocalHost(uri)
    if is_ssh_uri(uri):
        from virtmix.hosts.ssh import SshHost

        return SshHost(uri)
    raise UsageError(f"{uri}: virtmix reaches a domain's host only locally or over ssh",
                     hint="run virtmix on that host")


def cgroup_version_where(uri: str, parent: str | None, declared: str | None = None) -> str:
    """The cgroup version where a domain of `uri` runs.

    Nested in a guest virtmix built: v2. Otherwise what the inventory declares for the host
    (`declared`, used by render, which reads no machine), else the machine itself when the
    URI is local, else v1 (libvirt's remote hosts are assumed v1 unless declared).
    """
    if parent:
        return NESTED_CGROUPS
    if declared:
        return declared
    if is_local(uri):
        from virtmix.hosts.cgroupfs import cgroup_version

        return cgroup_version()
    return "v1"


def shares_are_weights(uri: str, parent: str | None, declared: str | None = None) -> bool:
    """Whether libvirt's <shares>/cpu_shares are cgroup v2 weights where the domain runs:
    libvirt writes them verbatim to cpu.weight there, so virtmix converts both ways."""
    return cgroup_version_where(uri, parent, declared) == "v2"
