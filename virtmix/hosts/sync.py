"""Copy a container's tree from one host to another with rsync, as often as needed.

A move copies twice: once while the container runs (most of the bytes), once frozen (only
what changed since). rsync does both with the same command: `-aHAX --numeric-ids` keeps
hard links, ACLs, xattrs and the numeric owners an <idmap>ped tree depends on, and
`--delete` makes the second pass exact. One end may be behind an ssh URI: rsync then runs
over virtmix's own ssh command line for that URI (its wrapper, key and pinned host key,
the same as libvirt's transport), so no other trust is set up. Both ends remote would need
the hosts to trust each other: refused.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time

from virtmix.errors import BackendError, UsageError
from virtmix.util.uris import is_local, is_ssh_uri

RSYNC_FLAGS = ["-aHAX", "--numeric-ids", "--delete", "--one-file-system"]


def _rsh(uri: str) -> tuple[str, str]:
    """(rsync -e command, user@host) for an ssh URI."""
    from virtmix.hosts.ssh import ssh_argv

    argv = ssh_argv(uri)
    assert argv[-2] == "--", argv  # ssh_argv ends with `--`, host
    return " ".join(shlex.quote(a) for a in argv[:-2]), argv[-1]


def _end(uri: str, path: str) -> tuple[str | None, str]:
    """(-e command or None, rsync's spelling of path on that host)."""
    p = path.rstrip("/") + "/"
    if is_local(uri):
        return None, p
    if is_ssh_uri(uri):
        rsh, host = _rsh(uri)
        return rsh, f"{host}:{p}"
    raise UsageError(f"{uri}: virtmix copies trees only to this machine or over ssh")


def sync_argv(src_uri: str, src: str, dst_uri: str, dst: str,
              only: str | None = None) -> list[str]:
    """The rsync command line that makes dst (on dst_uri's host) a copy of src (or of the
    one file `only` in it: a guest's disk, sparse, nothing else deleted)."""
    src_rsh, src_arg = _end(src_uri, src)
    dst_rsh, dst_arg = _end(dst_uri, dst)
    if src_rsh and dst_rsh:
        raise UsageError(f"copying a tree from {src_uri} to {dst_uri}: both are remote; "
                         "run virtmix on one of them")
    rsync = shutil.which("rsync")
    if rsync is None:
        raise UsageError("moving a container needs rsync on this machine (Debian: rsync)")
    rsh = src_rsh or dst_rsh
    flags = RSYNC_FLAGS if only is None else ["-aS", "--numeric-ids", "--mkpath"]
    if only is not None:
        src_arg += only
    return [rsync, *flags, *(["-e", rsh] if rsh else []), src_arg, dst_arg]


def sync_tree(src_uri: str, src: str, dst_uri: str, dst: str, *,
              timeout: float = 3600, only: str | None = None) -> float:
    """Make dst a copy of src (creating it); seconds taken. BackendError on failure."""
    return _rsync(sync_argv(src_uri, src, dst_uri, dst, only), f"copying {src} to {dst}",
                  dst_uri, timeout)


def sync_files(src_uri: str, dst_uri: str, paths: list[str], *,
               timeout: float = 3600) -> float:
    """Copy files (absolute paths) of src_uri's host to the same paths on dst_uri's host,
    sparse, parents made, in one rsync (one ssh connection: --files-from); seconds taken."""
    if not paths:
        return 0.0
    argv = sync_argv(src_uri, "/", dst_uri, "/", "")
    argv[1:1] = ["--files-from=-"]
    return _rsync(argv, f"copying {', '.join(paths)}", dst_uri, timeout,
                  "".join(p + "\n" for p in paths))


def _rsync(argv: list[str], what: str, dst_uri: str, timeout: float,
           files: str | None = None) -> float:
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             input=files, stdin=None if files else subprocess.DEVNULL,
                             check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} to {dst_uri}: over {timeout:g}s") from None
    # 24: "some files vanished before they could be transferred": the live pass copies a
    # running tree; the frozen pass that follows is exact.
    if res.returncode not in (0, 24):
        hint = ""
        if "rsync: command not found" in res.stderr or "rsync: not found" in res.stderr:
            hint = " (install rsync there; guests: `image: {packages: [rsync]}`)"
        raise BackendError(f"{what} to {dst_uri}: rsync exited "
                           f"{res.returncode}{hint}: {res.stderr.strip()[-500:]}")
    return time.monotonic() - t0
