"""virtmix's storage directory: where trees live, their locks, and deletion confined to it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from virtmix.errors import ConflictError, NotFoundError, RootfsError
from virtmix.inventory.rules import check_name
from virtmix.util.files import make_dir, write_atomic
from virtmix.util.layout import CONTAINERS_DIR, TREE_DIR

DEFAULT_ROOT = "/var/lib/virtmix"
CONTAINER_MARKER = ".virtmix-container"
CACHE_MARKER = "entry.json"
STATE_FILE = "state.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def _check_container(name: str) -> str:
    """A container's name: the inventory's rule for names (inventory.rules.check_name)."""
    try:
        return check_name(name)
    except ValueError as exc:
        raise RootfsError(f"container name: {exc}") from None


def _check_name(name: str, what: str) -> str:
    # Keys virtmix makes itself (cache entries, locks, logs) become path components: no
    # separators, no "..", nothing hidden. Names an admin gives go by _check_container.
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise RootfsError(f"{what} name {name!r}: expected letters, digits and _.+- only")
    return name


class Storage:
    """The storage root (default /var/lib/virtmix, env VIRTMIX_STORAGE) and its layout.

    root/cache/<entry>/{tree,entry.json}   base trees, complete iff the directory exists
    root/cache/.build-<entry>-<pid>-<n>/   builds in progress (never look complete)
    root/locks/<what>.lock                 flock()s serialising builds and clones
    root/logs/build-<entry>-<time>.log     builder output, kept after failures too
    root/containers/<name>/{rootfs,upper,work,state.json,root-password}
    """

    def __init__(self, root: str | Path | None = None) -> None:
        root = root or os.environ.get("VIRTMIX_STORAGE") or DEFAULT_ROOT
        # Resolved once: mount points in /proc/self/mountinfo are resolved paths, and the
        # overlay checks compare against them.
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"Storage({str(self.root)!r})"

    @property
    def cache_root(self) -> Path:
        return self.root / "cache"

    @property
    def containers_root(self) -> Path:
        return self.root / CONTAINERS_DIR

    def ensure(self) -> None:
        """Create the layout.

        The root and containers/ are 0711: an unprivileged container's init (host uid
        100000) must traverse them to its tree (libvirt_lxc creates /.oldroot there after
        entering the user namespace). cache/ is 0711 too, so that apt inside mmdebstrap can
        download as its sandbox user _apt instead of root. Nothing can be listed by others.
        Only directories made here get these modes: one that already exists (e.g. the
        admin's own storage_dir) keeps its mode and owner.
        """
        for d, mode in ((self.root, 0o711), (self.containers_root, 0o711),
                        (self.cache_root, 0o711), (self.root / "locks", 0o700)):
            make_dir(d, mode)

    def container_dir(self, name: str) -> Path:
        """Where a container's files live; its tree is tree_dir(name)."""
        return self.containers_root / _check_container(name)

    def tree_dir(self, name: str) -> Path:
        """A container's tree: the path views.py renders as <filesystem><source dir>."""
        return self.container_dir(name) / TREE_DIR

    def log_path(self, kind: str, name: str) -> Path:
        """A new log file root/logs/<kind>-<name>-<time>.log (builds keep their details)."""
        d = self.root / "logs"
        make_dir(d, 0o700)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return d / f"{kind}-{_check_name(name, kind)}-{stamp}-{os.getpid()}.log"

    def cache_entry(self, entry: str) -> Path:
        return self.cache_root / _check_name(entry, "cache entry")

    @contextlib.contextmanager
    def lock(self, what: str, *, wait: bool = True) -> Iterator[None]:
        """An exclusive flock on root/locks/<what>.lock (released when the holder dies)."""
        self.ensure()
        from virtmix.util.locking import check_private_dir, open_lock_file

        path = check_private_dir(self.root / "locks") / f"{_check_name(what, 'lock')}.lock"
        fd = open_lock_file(path)  # O_NOFOLLOW, never truncated
        try:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError as e:
                raise ConflictError(f"{path}: held by another virtmix process") from e
            yield
        finally:
            os.close(fd)

    def read_state(self, name: str) -> dict | None:
        """A container's state.json, or None when it has none."""
        path = self.container_dir(name) / STATE_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RootfsError(f"{path}: unreadable state file ({e})") from e

    def write_state(self, name: str, state: dict) -> None:

        path = self.container_dir(name) / STATE_FILE
        write_atomic(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(),
                     mode=0o600)

    def make_container_dir(self, name: str) -> Path:
        """STORAGE/containers/NAME with its marker, appearing whole: made under a temporary
        name, marker written, renamed. A kill in between leaves a `.new-NAME-*` dir (cleaned
        by the next call), never a NAME dir without marker that looks like someone else's."""
        from virtmix.util.files import fsync_dir

        cdir = self.container_dir(name)
        for stale in cdir.parent.glob(f".new-{name}-*"):
            if stale.is_dir() and not stale.is_symlink() and all(
                    p.name == CONTAINER_MARKER or p.name.endswith(".part")
                    for p in stale.iterdir()):
                for p in stale.iterdir():
                    p.unlink()
                stale.rmdir()
        tmp = cdir.with_name(f".new-{name}-{os.getpid()}")
        tmp.mkdir(mode=0o711)  # traversable by the container's mapped root, see Storage
        write_atomic(tmp / CONTAINER_MARKER, (name + "\n").encode())
        os.rename(tmp, cdir)
        fsync_dir(cdir.parent)
        return cdir

    def container_names(self) -> list[str]:
        if not self.containers_root.is_dir():
            return []
        return sorted(
            p.name for p in self.containers_root.iterdir()
            if (p / CONTAINER_MARKER).is_file() and not p.is_symlink()
            and not p.name.startswith(".")  # a .new-NAME-* being made
        )


def _mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def _escaped(path: str) -> str:
    """path as /proc/self/mountinfo writes it (space, tab, newline, backslash in octal)."""
    return (path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
            .replace("\n", "\\012"))


def _parse(lines: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        mnt = left.split()[4]
        if "\\" in mnt:
            mnt = mnt.encode().decode("unicode_escape")
        fields = right.split()
        out.append((mnt, fields[0], fields[2] if len(fields) > 2 else ""))
    return out


def mount_points(hint: str | None = None) -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) for every mount in our namespace.

    hint: a string every wanted line contains (a path): only those lines are parsed.
    With thousands of containers the table has thousands of overlay mounts, and
    provisioning or deleting each container asks it several times (issue 13's density
    run): parsing all of it each time made that quadratic."""
    text = _mountinfo()
    if hint is None:
        return _parse(text.splitlines())
    esc = _escaped(hint)
    if esc not in text:
        return []
    return _parse([line for line in text.splitlines() if esc in line])


def is_mount_point(path: Path) -> bool:
    p = str(path)
    return any(m == p for m, _, _ in mount_points(p))


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below path (path must be resolved)."""
    p = str(path)
    return [m for m, _, _ in mount_points(p) if m == p or m.startswith(p + "/")]


def confined(storage: Storage, path: Path, parent: Path) -> Path:
    """path resolved, refused unless it is a real directory directly inside parent.

    Resolving first means a symlink anywhere in the path that leads out of the storage
    directory is caught before anything is deleted.
    """
    st = os.lstat(path)  # raises FileNotFoundError for the caller to report
    if stat.S_ISLNK(st.st_mode):
        raise ConflictError(f"{path}: is a symlink; virtmix deletes only its own directories")
    if not stat.S_ISDIR(st.st_mode):
        raise ConflictError(f"{path}: not a directory; virtmix did not create it")
    resolved = path.resolve(strict=True)
    real_parent = parent.resolve(strict=True)
    if resolved.parent != real_parent or not resolved.is_relative_to(storage.root.resolve()):
        raise ConflictError(
            f"{path}: resolves to {resolved}, outside {real_parent}; refusing to delete it"
        )
    return resolved


def remove_tree(storage: Storage, path: Path, parent: Path, marker: str) -> None:
    """Delete a virtmix-made directory below parent, and nothing else.

    Refuses symlinks, directories resolving outside the storage dir, directories without
    virtmix's marker file, and trees with anything mounted inside (unmount first).
    """
    resolved = confined(storage, path, parent)
    mk = resolved / marker
    try:
        mst = os.lstat(mk)
    except FileNotFoundError:
        mst = None
    if mst is None or not stat.S_ISREG(mst.st_mode):
        raise ConflictError(
            f"{resolved}: has no {marker} marker; virtmix did not create it, not deleting"
        )
    busy = mounts_below(resolved)
    if busy:
        raise RootfsError(
            f"{resolved}: refusing to delete, something is mounted inside: {', '.join(busy)}"
        )
    dev = os.lstat(resolved).st_dev

    def onerror(func, p, exc_info):  # signature fixed by shutil (3.11: onerror)
        raise RootfsError(f"{p}: cannot delete ({exc_info[1]})") from exc_info[1]

    # rmtree works on file descriptors and never follows symlinks (shutil._rmtree_safe_fd).
    shutil.rmtree(resolved, onerror=onerror)
    if os.path.lexists(resolved):
        raise RootfsError(f"{resolved}: still there after delete (device {dev})")


def remove_container_dir(storage: Storage, name: str) -> None:
    """The container-dir half of remove_container_tree (overlay already unmounted)."""
    d = storage.container_dir(name)
    if not os.path.lexists(d):
        raise NotFoundError(f"container tree {d}: does not exist")
    remove_tree(storage, d, storage.containers_root, CONTAINER_MARKER)
