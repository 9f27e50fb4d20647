"""The container's pid 1 wrapper: a `name=systemd` cgroup of its own on a cgroup v1 host.

libvirt 9.0's LXC driver gives a container no cgroup namespace and never places it in the
`name=systemd` hierarchy (it must not mkdir there), so on a cgroup v1 host without systemd
every container's init starts at that hierarchy's root, which the container sees whole.
systemd takes the group it finds itself in as its root, so all containers made
`/init.scope`, `/system.slice/X`... in the one shared tree: one container's systemd removed
another's just-made group ("Failed to attach to cgroup /system.slice/X: No such file or
directory", 219/CGROUP, `degraded`), and a privileged one moved itself to `/init.scope` of
the memory and devices hierarchies, out of libvirt's limits.

The base's /sbin/init (diverted with dpkg-divert, so an upgrade of systemd-sysv leaves it
in place) runs this script first: when pid 1 sits at the top of a v1 `name=systemd`
hierarchy mounted whole, it makes the group of libvirt's machine group's path there
(its cpu placement, `/machine/lxc-PID-NAME.libvirt-lxc`), joins it and execs systemd, which
then keeps all its groups under that path in every hierarchy, inside libvirt's. Anywhere
else (cgroup v2, guests, a host whose systemd placed the container) it only execs systemd.
What runs leave behind in the shared hierarchies, virtmix removes: util/shared_cgroups.py.
"""

from __future__ import annotations

from pathlib import Path

# The diverted original: dpkg keeps installing systemd-sysv's /sbin/init there.
DIVERT_SUFFIX = ".distrib"

# bash (Essential in Debian, like dash) for `exec -a`: systemd keeps "/sbin/init" as its
# command line (ps, pgrep, admins' scripts). Builtins only but one mkdir: it runs before
# every boot. Failing to make or join the group is not fatal: systemd then starts where it
# is, as without the wrapper.
INIT_SCRIPT = """\
#!/bin/bash
# virtmix: give this container's systemd a name=systemd cgroup of its own when the host's
# cgroup v1 tree is shared by all containers (no cgroup namespace, libvirt LXC); a no-op
# anywhere else. See virtmix's docs/rootfs.md. The real init: @REAL@ (dpkg-divert).
if [ "$$" = 1 ] && [ -r @PROC@/self/cgroup ]; then
    sd= place=
    while IFS=: read -r _ ctl path; do
        case "$ctl" in
            name=systemd) sd=$path ;;
            cpu|cpu,cpuacct|cpuacct,cpu) place=$path ;;
        esac
    done < @PROC@/self/cgroup
    whole=
    if [ "$sd" = / ] && [ -n "$place" ] && [ "$place" != / ]; then
        while read -r _ _ _ root mnt rest; do
            if [ "$mnt" = @TOP@ ]; then
                case "$rest" in
                    *" - cgroup "*name=systemd*) whole=$root ;;
                    *) whole= ;;
                esac
            fi
        done < @PROC@/self/mountinfo
    fi
    if [ "$whole" = / ]; then
        top=@TOP@
        # libvirt's machine group path, else (its parent is another uid's, as when a
        # privileged container made /machine before an idmapped one) the same name at
        # the top, which libvirt gave the idmapped root.
        for g in "$top$place" "$top/${place##*/}"; do
            if mkdir -p "$g" 2>/dev/null \\
                    && { echo "$$" > "$g/cgroup.procs"; } 2>/dev/null; then
                break
            fi
            g=
        done
        [ -n "$g" ] || echo "virtmix-init: could not join a name=systemd group of its own" \\
            "($top$place); systemd shares the host's" >&2
    fi
fi
exec -a "$0" @REAL@ "$@"
"""


def init_script(real: str, proc: str = "/proc", top: str = "/sys/fs/cgroup/systemd") -> str:
    """The wrapper's text, exec'ing the diverted init at `real`; `proc` and `top` (where
    the `name=systemd` hierarchy is mounted) differ only in tests."""
    return INIT_SCRIPT.replace("@REAL@", real).replace("@PROC@", proc).replace("@TOP@", top)


def init_path(tree: Path) -> str | None:
    """The path (in the tree) dpkg installed /sbin/init at: `/sbin/init` in bookworm,
    `/usr/sbin/init` in trixie (moved to /usr); None without systemd-sysv."""
    listing = tree / "var/lib/dpkg/info/systemd-sysv.list"
    try:
        lines = listing.read_text().split("\n")
    except FileNotFoundError:
        return None
    for want in ("/sbin/init", "/usr/sbin/init"):
        if want in lines:
            return want
    return None


def is_wrapped(tree: Path) -> bool:
    """True when the tree's /sbin/init is this wrapper."""
    try:
        return "virtmix: give this container's systemd" in (tree / "sbin/init").read_text()
    except (OSError, UnicodeDecodeError):
        return False
