"""Give a container its own tree from a cached base: overlay, else reflink, else copy."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.rootfs.storage import is_mount_point, mount_points
from virtmix.util.layout import TREE_DIR

METHODS = ("overlay", "reflink", "copy")


def overlay_options(lower: Path, upper: Path, work: Path) -> str:
    for p in (lower, upper, work):
        if any(c in str(p) for c in ",:\\"):
            raise RootfsError(f"{p}: overlayfs cannot take a path with ',', ':' or '\\'")
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


_LIBC = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _LIBC


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay at target unless something is already mounted there.

    mount(2) itself, not mount(8): the command costs a fork and exec per container, and
    libmount reads the whole mount table, thousands of lines with thousands of containers
    (issue 13's density run)."""
    if is_mount_point(target):
        return
    opts = overlay_options(lower, upper, work)
    if _libc().mount(b"overlay", str(target).encode(), b"overlay", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise RootfsError(f"overlay mount at {target} failed: {os.strerror(err)}"
                          + (" (is overlayfs available?)" if err == errno.ENODEV else ""))


def overlay_mounted_here(target: Path, upper: Path) -> bool:
    """True when target carries virtmix's own overlay (upperdir = this container's upper)."""
    t = str(target)
    for mnt, fstype, opts in mount_points(t):
        if mnt == t and fstype == "overlay" and f"upperdir={upper}" in opts.split(","):
            return True
    return False


def unmount_overlay(target: Path, upper: Path) -> None:
    """Unmount our overlay at target; refuse anything else mounted there."""
    if not is_mount_point(target):
        return
    if not overlay_mounted_here(target, upper):
        raise RootfsError(f"{target}: something other than virtmix's overlay is mounted there")
    if _libc().umount2(str(target).encode(), 0) != 0:  # umount(8) would read the table
        raise RootfsError(
            f"cannot unmount {target}: {os.strerror(ctypes.get_errno())}",
            hint="is the container still running? stop it first",
        )


def _copy_root_attrs(src: Path, dst: Path) -> None:
    # The merged view's "/" takes the upper dir's owner and mode: make them the base's,
    # or a shifted container would see "/" owned by an unmapped user.
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)


def clone_overlay(lower: Path, cdir: Path) -> Path:
    upper, work, target = cdir / "upper", cdir / "work", cdir / TREE_DIR
    for d in (upper, work, target):
        d.mkdir(mode=0o755, exist_ok=True)
    _copy_root_attrs(lower, upper)
    _copy_root_attrs(lower, target)
    mount_overlay(lower, upper, work, target)
    return target


def clone_copy(lower: Path, cdir: Path, reflink: bool) -> Path:
    target = cdir / TREE_DIR
    flag = "--reflink=always" if reflink else "--reflink=never"
    res = subprocess.run(["cp", "-a", flag, "--", str(lower), str(target)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        # A failed reflink copy leaves a partial tree: remove it before falling back.
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        raise RootfsError(f"cp {flag} of {lower} failed: {res.stderr.strip()[:300]}")
    return target


def make_clone(lower: Path, cdir: Path, method: str = "auto") -> tuple[Path, str]:
    """Clone lower into cdir/rootfs; method auto tries overlay, reflink, copy in turn."""
    if method not in ("auto", *METHODS):
        raise RootfsError(f"clone method {method!r}: expected auto, {', '.join(METHODS)}")
    tried = []
    for m in (METHODS if method == "auto" else (method,)):
        try:
            if m == "overlay":
                return clone_overlay(lower, cdir), m
            return clone_copy(lower, cdir, reflink=(m == "reflink")), m
        except RootfsError as e:
            tried.append(f"{m}: {e}")
            if m == "overlay":
                for d in (TREE_DIR, "upper", "work"):
                    with contextlib.suppress(OSError):
                        shutil.rmtree(cdir / d)
    raise RootfsError(f"cannot clone {lower} into {cdir}: " + "; ".join(tried))
