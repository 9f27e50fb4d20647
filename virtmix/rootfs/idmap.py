"""Shift a tree's ownership into a user-namespace range so libvirt's <idmap> can use it.

libvirt maps container uid/gid 0..count-1 to host offset..offset+count-1; a tree meant
for it must be owned by that host range. chown() clears setuid/setgid bits and file
capabilities, so both are put back after each change. POSIX ACLs name users and groups by
host id, so their named entries move with the range too (a moved tree keeps them), as does
the root id a namespaced (v3) file capability records.

This module needs only the standard library (the one import of virtmix's is replaced when
`remote_script` sends it to another host's python3 to shift a tree there), and there only
what Debian's python3-minimal has: no json (its output is written by hand), no inspect.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
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


Seen = tuple[set[int], set[int]]  # (uids, gids) of the source range met, 0-based


def _shift_one(path: str | bytes, st: os.stat_result, offset: int, count: int,
               gid_offset: int | None = None, source: int = 0,
               gid_source: int | None = None, seen: Seen | None = None) -> bool:
    """lchown one entry whose ids are in [source, source+count) to offset..; True when it
    changed (gid_offset/gid_source default to the uid ones). Source-range ids met (owner,
    group, ACL entries, a v3 capability's root) are added to seen, 0-based."""
    uid, gid = st.st_uid, st.st_gid
    goff = offset if gid_offset is None else gid_offset
    gsrc = source if gid_source is None else gid_source

    def user(i: int) -> int:
        if source <= i < source + count:
            if seen is not None:
                seen[0].add(i - source)
            return i - source + offset
        return i

    def group(i: int) -> int:
        if gsrc <= i < gsrc + count:
            if seen is not None:
                seen[1].add(i - gsrc)
            return i - gsrc + goff
        return i

    nu, ng = user(uid), group(gid)
    mode = st.st_mode
    names = () if stat.S_ISLNK(mode) else _xattr_names(path)
    # ACLs first: a crash between this and the chown leaves ids that a rerun (of the
    # same shift) finds in the target range and leaves alone, the owner it then shifts.
    acl_changed = _shift_acls(path, names, user, group)
    cap = new_cap = None
    if _CAP in names and stat.S_ISREG(mode):
        cap = new_cap = os.getxattr(path, _CAP, follow_symlinks=False)
        if len(cap) == 24 and struct.unpack_from("<I", cap)[0] & 0xFF000000 == _CAP_V3:
            new_cap = cap[:20] + struct.pack("<I", user(struct.unpack_from("<I", cap, 20)[0]))
    if (nu, ng) == (uid, gid):
        # The owner is right already (rsync mapped it, or a rerun), yet rsync may have
        # written back a v3 capability with the source's root: that alone is fixed.
        if new_cap != cap:
            assert new_cap is not None
            os.setxattr(path, _CAP, new_cap, follow_symlinks=False)
            return True
        return acl_changed
    os.lchown(path, nu, ng)  # clears setuid/setgid and the capability: both put back
    if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(mode))
    if new_cap is not None:
        os.setxattr(path, _CAP, new_cap, follow_symlinks=False)
    return True


def _xattr_names(path: str | bytes) -> list[str]:
    """path's xattr names ([] where the filesystem has none): one call tells whether
    there are ACLs or a capability to read at all."""
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return []
        raise


def _shift_acls(path: str | bytes, names: Sequence[str], user: Callable[[int], int],
                group: Callable[[int], int]) -> bool:
    """Rewrite the named user/group entries of path's POSIX ACLs; True when one changed."""
    changed = False
    for name in _ACLS:
        if name not in names:
            continue
        blob = bytearray(os.getxattr(path, name, follow_symlinks=False))
        this = False
        for at in range(4, len(blob) - 7, 8):  # u32 version, then (u16 tag, u16 perm, u32 id)
            tag, _perm, ident = struct.unpack_from("<HHI", blob, at)
            new = user(ident) if tag == _ACL_USER else group(ident) if tag == _ACL_GROUP \
                else ident
            if new != ident:
                struct.pack_into("<I", blob, at + 4, new)
                this = True
        if this:
            os.setxattr(path, name, bytes(blob), follow_symlinks=False)
            changed = True
    return changed


def shift_tree(root: Path, offset: int = IDMAP_OFFSET, count: int = IDMAP_COUNT, *,
               gid_offset: int | None = None, source: int = 0,
               gid_source: int | None = None, seen: Seen | None = None) -> int:
    """Shift every entry below root (root included) with ids < count by offset.

    With source (gid_source), ids in [source, source+count) move to offset.. instead: a tree
    shifted for one container's range re-shifted for another's. gid_offset gives gids their
    own range. Entries already in the target range are left alone, so running it twice is
    harmless. Never follows symlinks, never crosses into another filesystem. Returns
    entries changed; seen collects the source-range ids met (see _shift_one).
    """
    args = (offset, count, gid_offset, source, gid_source, seen)
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


def shift_paths(root: Path, paths: Iterable[str | bytes], offset: int, count: int, *,
                gid_offset: int | None = None, source: int = 0,
                gid_source: int | None = None) -> int:
    """shift_tree for only the listed entries of root (paths relative to it, as rsync
    lists what it changed: "./" is root, a dir ends with "/"; any bytes but NUL), not
    below them. A path that is gone, leaves root's filesystem, or names a parent that
    is not a real directory of root (a symlink on the way) is skipped. Returns entries
    changed."""
    args = (offset, count, gid_offset, source, gid_source)
    base = os.fsencode(os.path.realpath(root))
    root_dev = os.lstat(base).st_dev
    changed = 0
    for rel in paths:
        parts = [c for c in os.fsencode(rel).split(b"/") if c not in (b"", b".")]
        if b".." in parts:
            continue
        path = os.path.join(base, *parts) if parts else base
        if parts and os.path.realpath(os.path.dirname(path)) != \
                os.path.join(base, *parts[:-1]):
            continue  # a parent is a symlink now: never follow one out of the tree
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_dev == root_dev:
            changed += _shift_one(path, st, *args)
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


def remote_script(root: str, to: tuple[int, int], source: tuple[int, int], count: int,
                  *, stdin: bool = False) -> str:
    """A python3 program that shifts root on another host: this module's own source, with
    its one virtmix import replaced. By default (fed to `python3 -`) it runs shift_tree and
    prints JSON {"changed": n, "uids": [...], "gids": [...]} (the source-range ids it met,
    0-based); with stdin (started by BOOT before its input exists), shift_paths on the
    paths it then reads from stdin, NUL-separated, to its end, and prints {"changed": n}.
    to/source are (uid, gid) starts of the target and source ranges."""
    import inspect
    import sys

    text = inspect.getsource(sys.modules[__name__])
    assert _IMPORT in text, "idmap.py: the import remote_script replaces has changed"
    text = text.replace(_IMPORT, f"IDMAP_OFFSET, IDMAP_COUNT = {IDMAP_OFFSET}, "
                                 f"{IDMAP_COUNT}\n")
    ids = (f"{int(to[0])}, {int(count)}, gid_offset={int(to[1])}, "
           f"source={int(source[0])}, gid_source={int(source[1])}")
    if stdin:
        run = ("listed = [p for p in sys.stdin.buffer.read().split(b'\\0') if p]\n"
               f"print(_json(shift_paths(Path({root!r}), listed, {ids})))\n")
    else:
        run = (f"seen = (set(), set())\n"
               f"print(_json(shift_tree(Path({root!r}), {ids}, seen=seen), seen))\n")
    return f"{text}\n\nimport sys\n\n{run}"


def _json(changed: int, seen: Seen | None = None) -> str:
    """What a remote shift prints: {"changed": n} and, for a whole tree, "uids" and "gids"
    (sorted); JSON written by hand (python3-minimal has no json module)."""
    out = f'{{"changed": {int(changed)}'
    if seen is not None:
        for key, ids in (("uids", seen[0]), ("gids", seen[1])):
            out += f', "{key}": [{", ".join(str(int(i)) for i in sorted(ids))}]'
    return out + "}"


# `python3 -c BOOT` reads a program of the length its first line of stdin says, runs it,
# and leaves the rest of stdin to it: a remote_script(stdin=True) can be started (ssh,
# interpreter, compile) before its input, the list of paths, exists.
BOOT = ("import sys; b = sys.stdin.buffer; "
        "exec(compile(b.read(int(b.readline())), 'virtmix-idmap', 'exec'))")
