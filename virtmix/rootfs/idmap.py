"""Shift a tree's ownership into a user-namespace range so libvirt's <idmap> can use it.

libvirt maps container uid/gid 0..count-1 to host offset..offset+count-1; a tree meant
for it must be owned by that host range. chown() clears setuid/setgid bits and file
capabilities, so both are put back after each change. POSIX ACLs name users and groups by
host id, so their named entries move with the range too (a moved tree keeps them), as does
the root id a namespaced (v3) file capability records.

This module needs only the standard library (the one import of virtmix's is replaced when
`remote_script` sends it to another host's python3 to shift a tree there).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from virtmix.util.identity import IDMAP_COUNT, IDMAP_OFFSET

_CAP = "security.capability"
_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
_ACL_USER, _ACL_GROUP = 0x02, 0x08  # the entry tags that carry an id (linux/posix_acl_xattr.h)
_CAP_V3 = 0x03000000  # VFS_CAP_REVISION_3: 24 bytes, the namespace root's host uid last


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

    def user(i: int) -> int:
        return i - source + offset if source <= i < source + count else i

    def group(i: int) -> int:
        return i - gsrc + goff if gsrc <= i < gsrc + count else i

    nu, ng = user(uid), group(gid)
    mode = st.st_mode
    # ACLs first: a crash between this and the chown leaves ids that a rerun (of the
    # same shift) finds in the target range and leaves alone, the owner it then shifts.
    acl_changed = False if stat.S_ISLNK(mode) else _shift_acls(path, user, group)
    if (nu, ng) == (uid, gid):
        return acl_changed
    cap = None
    if stat.S_ISREG(mode) and mode & 0o111:
        try:
            cap = os.getxattr(path, _CAP, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
        if cap is not None and len(cap) == 24 and \
                struct.unpack_from("<I", cap)[0] & 0xFF000000 == _CAP_V3:
            cap = cap[:20] + struct.pack("<I", user(struct.unpack_from("<I", cap, 20)[0]))
    os.lchown(path, nu, ng)
    if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(mode))
    if cap is not None:
        os.setxattr(path, _CAP, cap, follow_symlinks=False)
    return True


def _shift_acls(path: str, user: Callable[[int], int], group: Callable[[int], int]) -> bool:
    """Rewrite the named user/group entries of path's POSIX ACLs; True when one changed."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise
    changed = False
    for name in _ACLS:
        if name not in names:
            continue
        blob = bytearray(os.getxattr(path, name, follow_symlinks=False))
        for at in range(4, len(blob) - 7, 8):  # u32 version, then (u16 tag, u16 perm, u32 id)
            tag, _perm, ident = struct.unpack_from("<HHI", blob, at)
            new = user(ident) if tag == _ACL_USER else group(ident) if tag == _ACL_GROUP \
                else ident
            if new != ident:
                struct.pack_into("<I", blob, at + 4, new)
                changed = True
        if changed:
            os.setxattr(path, name, bytes(blob), follow_symlinks=False)
    return changed


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


_IMPORT = "from virtmix.util.identity import IDMAP_COUNT, IDMAP_OFFSET\n"


def remote_script(root: str, to: tuple[int, int], source: tuple[int, int], count: int) -> str:
    """A python3 program that runs shift_tree(root) on another host (fed to `python3 -`):
    this module's own source, with its one virtmix import replaced; it prints the number
    of entries changed. to/source are (uid, gid) starts of the target and source ranges."""
    import inspect
    import sys

    text = inspect.getsource(sys.modules[__name__])
    assert _IMPORT in text, "idmap.py: the import remote_script replaces has changed"
    text = text.replace(_IMPORT, f"IDMAP_OFFSET, IDMAP_COUNT = {IDMAP_OFFSET}, "
                                 f"{IDMAP_COUNT}\n")
    call = (f"shift_tree(Path({root!r}), {int(to[0])}, {int(count)}, gid_offset={int(to[1])}, "
            f"source={int(source[0])}, gid_source={int(source[1])})")
    return f"{text}\n\nprint({call})\n"
