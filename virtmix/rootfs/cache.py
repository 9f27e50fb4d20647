"""List and prune the base-tree cache."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import ConflictError, NotFoundError, RootfsError
from virtmix.rootfs.build import BUILD_MARKER
from virtmix.rootfs.storage import CACHE_MARKER, Storage, remove_tree


@dataclass(frozen=True)
class CacheEntry:
    """One complete cache entry, for `virtmix rootfs ls`."""

    entry: str
    kind: str  # "base" | "shifted"
    suite: str
    variant: str
    architecture: str
    packages: tuple[str, ...]
    built: str
    build_seconds: float
    size_bytes: int
    used_by: tuple[str, ...]  # containers cloned from it
    overlay_users: tuple[str, ...]  # of those, the ones that need it (overlay lower)
    path: Path

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["path"] = str(self.path)
        d["packages"] = list(self.packages)
        d["used_by"] = list(self.used_by)
        d["overlay_users"] = list(self.overlay_users)
        return d


def disk_usage(root: Path) -> int:
    """Bytes allocated below root, hard links counted once, symlinks not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return total


def _users(storage: Storage) -> dict[str, list[tuple[str, str]]]:
    users: dict[str, list[tuple[str, str]]] = {}
    for name in storage.container_names():
        try:
            state = storage.read_state(name)
        except RootfsError:
            continue
        if state:
            users.setdefault(state["cache_entry"], []).append((name, state["method"]))
    return users


def list_cache(storage: Storage, *, sizes: bool = True) -> list[CacheEntry]:
    """Every complete entry (builds in progress and leftovers are not entries)."""
    if not storage.cache_root.is_dir():
        return []
    users = _users(storage)
    out = []
    for p in sorted(storage.cache_root.iterdir()):
        marker = p / CACHE_MARKER
        if p.name.startswith(".") or p.is_symlink() or not marker.is_file():
            continue
        meta = json.loads(marker.read_text())
        spec = meta.get("spec", {})
        u = users.get(p.name, [])
        out.append(CacheEntry(
            entry=p.name, kind=meta.get("kind", "base"), suite=spec.get("suite", "?"),
            variant=spec.get("variant", "?"), architecture=spec.get("architecture", "?"),
            packages=tuple(spec.get("packages", ())), built=meta.get("built", "?"),
            build_seconds=float(meta.get("seconds", 0)),
            size_bytes=disk_usage(p) if sizes else 0,
            used_by=tuple(n for n, _ in u),
            overlay_users=tuple(n for n, m in u if m == "overlay"), path=p))
    return out


def _prune_leftovers(storage: Storage) -> list[str]:
    """Remove .build-* dirs of builds that died (their lock is free)."""
    removed = []
    for p in sorted(storage.cache_root.glob(".build-*")):
        entry = p.name[len(".build-"):].rsplit("-", 2)[0]
        try:
            with storage.lock(f"cache-{entry}", wait=False):
                remove_tree(storage, p, storage.cache_root, BUILD_MARKER)
                removed.append(p.name)
        except ConflictError:
            continue  # a build is running: its directory is not a leftover
    return removed


def prune_cache(storage: Storage, keep_used: bool = True,
                entries: list[str] | None = None) -> list[str]:
    """Delete cache entries; returns the names removed.

    keep_used=True keeps every entry some container was cloned from. Entries that are the
    lower layer of an overlay clone are always kept: deleting them would break it.
    `entries` limits the prune to those names. Leftovers of killed builds go too.
    """
    known = list_cache(storage, sizes=False)
    if entries is not None:
        unknown = sorted(set(entries) - {e.entry for e in known})
        if unknown:
            raise NotFoundError(f"no cache entry {', '.join(map(repr, unknown))} in "
                                f"{storage.cache_root}", hint="virtmix rootfs ls")
    if not storage.cache_root.is_dir():
        return []
    removed = _prune_leftovers(storage)
    for e in known:
        if entries is not None and e.entry not in entries:
            continue
        if e.overlay_users or (keep_used and e.used_by):
            continue
        with storage.lock(f"cache-{e.entry}"):
            remove_tree(storage, e.path, storage.cache_root, CACHE_MARKER)
        removed.append(e.entry)
    return removed
