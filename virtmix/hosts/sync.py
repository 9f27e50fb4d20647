"""Copy a container's tree from one host to another with rsync, as often as needed.

A move copies twice: once while the container runs (most of the bytes), once frozen (only
what changed since). rsync does both with the same command: `-aHAX --numeric-ids` keeps
hard links, ACLs, xattrs and the numeric owners an <idmap>ped tree depends on, and
`--delete` makes the second pass exact. One end may be behind an ssh URI: rsync then runs
over virtmix's own ssh command line for that URI (its wrapper, key and pinned host key,
the same as libvirt's transport), so no other trust is set up. Both ends remote would need
the hosts to trust each other: refused.

A tree shifted to another id range on the target is copied onto with `--usermap` /
`--groupmap` (owners mapped as they arrive, so an unchanged file stays unchanged), and the
frozen pass can list what it changed (`sync_tree_listed`) for the shift to finish.
"""

from __future__ import annotations

import re
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
              only: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
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
    return [rsync, *flags, *extra, *(["-e", rsh] if rsh else []), src_arg, dst_arg]


def _maps(usermap: str | None, groupmap: str | None) -> tuple[str, ...]:
    return ((f"--usermap={usermap}",) if usermap else ()) + \
        ((f"--groupmap={groupmap}",) if groupmap else ())


def sync_tree(src_uri: str, src: str, dst_uri: str, dst: str, *,
              timeout: float = 3600, only: str | None = None,
              usermap: str | None = None, groupmap: str | None = None) -> float:
    """Make dst a copy of src (creating it); seconds taken. BackendError on failure.
    usermap/groupmap: rsync's FROM:TO,... (numeric ids), applied by the receiver."""
    argv = sync_argv(src_uri, src, dst_uri, dst, only, _maps(usermap, groupmap))
    return _rsync(argv, f"copying {src} to {dst}", dst_uri, timeout)[0]


# One line per item rsync changed in any way (`%i`: content, owner, mode, ACL, xattr...):
# the 11-character change summary, a space, the name as rsync prints it.
LIST_FORMAT = "--out-format=%i %n"
_ITEM = re.compile(rb"[<>ch.][fdLDS][^ ]{9}")
_ESCAPE = re.compile(rb"\\#([0-7]{3})")


def changed_paths(out: bytes) -> list[bytes]:
    """The names (relative to the copy's root, as bytes) in rsync's LIST_FORMAT output,
    deletions and anything else it printed left out. rsync writes a control character
    (a newline in a name) and a backslash that would read as an escape as `\\#ooo`
    (octal), so each line is one name and the escapes are undone here."""
    names = []
    for line in out.split(b"\n"):
        item, _, name = line.partition(b" ")
        if name and _ITEM.fullmatch(item):
            names.append(_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), name))
    return names


def sync_tree_listed(src_uri: str, src: str, dst_uri: str, dst: str, *,
                     usermap: str | None = None, groupmap: str | None = None,
                     timeout: float = 3600) -> tuple[float, list[bytes]]:
    """sync_tree that also says what it changed: (seconds, names relative to dst)."""
    argv = sync_argv(src_uri, src, dst_uri, dst, None,
                     (LIST_FORMAT, *_maps(usermap, groupmap)))
    seconds, out = _rsync(argv, f"copying {src} to {dst}", dst_uri, timeout)
    return seconds, changed_paths(out)


def sync_files(src_uri: str, dst_uri: str, paths: list[str], *,
               timeout: float = 3600) -> float:
    """Copy files (absolute paths) of src_uri's host to the same paths on dst_uri's host,
    sparse, parents made, in one rsync (one ssh connection: --files-from); seconds taken."""
    if not paths:
        return 0.0
    argv = sync_argv(src_uri, "/", dst_uri, "/", "")
    argv[1:1] = ["--files-from=-"]
    return _rsync(argv, f"copying {', '.join(paths)}", dst_uri, timeout,
                  "".join(p + "\n" for p in paths))[0]


def _rsync(argv: list[str], what: str, dst_uri: str, timeout: float,
           files: str | None = None) -> tuple[float, bytes]:
    """Run rsync; (seconds, its stdout)."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, timeout=timeout,
                             input=files.encode() if files else None,
                             stdin=None if files else subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} to {dst_uri}: over {timeout:g}s") from None
    # 24: "some files vanished before they could be transferred": the live pass copies a
    # running tree; the frozen pass that follows is exact.
    if res.returncode not in (0, 24):
        hint = ""
        stderr = res.stderr.decode(errors="replace")
        if "rsync: command not found" in stderr or "rsync: not found" in stderr:
            hint = " (install rsync there; guests virtmix builds have it)"
        raise BackendError(f"{what} to {dst_uri}: rsync exited "
                           f"{res.returncode}{hint}: {stderr.strip()[-500:]}")
    return time.monotonic() - t0, res.stdout
