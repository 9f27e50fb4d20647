"""Shift a tree's ownership into a user-namespace range so libvirt's <idmap> can use it.

libvirt maps container uid/gid 0..count-1 to host offset..offset+count-1; a tree meant
for it must be owned by that host range. chown() clears setuid/setgid bits and file
capabilities, so both are put back after each change. POSIX ACLs are not shifted (a
Debian base tree has none).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from virtmix.util.identity import IDMAP_COUNT, IDMAP_OFFSET

_CAP = "security.capability"


def host_supports_idmap() -> bool:
    """True when the kernel has user namespaces (what libvirt's <idmap> needs)."""
    if not os.path.exists("/proc/self/ns/user"):
        return False
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read().strip() or "0") > 0
    except (OSError, ValueError):
        return True  # older kernels have no such knob, and user namespaces on


def _shift_one(path: str, st: os.stat_result, offset: int, count: int,
               gid_offset: int | None = None, source: int = 0,
               gid_source: int | None = None) -> bool:
    """lchown one entry whose ids are in [source, source+count) to offset..; True when it
    changed (gid_offset/gid_source default to the uid ones)."""
    uid, gid = st.st_uid, st.st_gid
    goff = offset if gid_offset is None else gid_offset
    gsrc = source if gid_source is None else gid_source
    nu = uid - source + offset if source <= uid < source + count else uid
    ng = gid - gsrc + goff if gsrc <= gid < gsrc + count else gid
    if (nu, ng) == (uid, gid):
        return False
    cap = None
    mode = st.st_mode
    if stat.S_ISREG(mode) and mode & 0o111:
        try:
            cap = os.getxattr(path, _CAP, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
    os.lchown(path, nu, ng)
    if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(mode))
    if cap is not None:
        os.setxattr(path, _CAP, cap, follow_symlinks=False)
    return True


def shift_tree(root: Path, offset: int = IDMAP_OFFSET, count: int = IDMAP_COUNT, *,
               gid_offset: int | None = None, source: int = 0,
               gid_source: int | None = None) -> int:
    """Shift every entry below root (root included) with ids < count by offset.

    With source (gid_source), ids in [source, source+count) move to offset.. instead: a tree
    shifted for one container's range re-shifted for another's. gid_offset gives gids their
    own range. Entries already in the target range are left alone, so running it twice is
    harmless. Never follows symlinks, never crosses into another filesystem. Returns
    entries changed.
    """
    args = (offset, count, gid_offset, source, gid_source)
    root_st = os.lstat(root)
    changed = int(_shift_one(str(root), root_st, *args))
    stack = [str(root)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if st.st_dev != root_st.st_dev:
                    continue
                changed += _shift_one(e.path, st, *args)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return changed


def shift_listed(upper: Path, merged: Path, offset: int = IDMAP_OFFSET,
                 count: int = IDMAP_COUNT, gid_offset: int | None = None) -> int:
    """Shift, through the merged overlay view, only what the overlay's upper dir holds.

    Files a customisation created are in upper and owned by host root; everything that
    came from the (already shifted) lower layer keeps its ids. Whiteouts have no merged
    counterpart and are skipped.
    """
    changed = 0
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(upper / rel if rel else upper) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                target = merged / r
                try:
                    st = os.lstat(target)
                except FileNotFoundError:
                    continue
                changed += _shift_one(str(target), st, offset, count, gid_offset)
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
    return changed
