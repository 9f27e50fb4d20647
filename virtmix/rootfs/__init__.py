"""Root filesystems for containers: build a Debian base once, cache it, clone it per container.

The public entry points used by apply/create and the CLI live here; the steps are in
spec (what), sources (where from), build (base + cache), base_setup / customise (what
lxc-debian did), idmap (unprivileged ownership), clone (overlay/reflink/copy) and storage
(layout, locks, confined deletion).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import ConflictError, NotFoundError, RootfsError, VirtmixError
from virtmix.rootfs.build import BaseTree, Progress, ensure_lower
from virtmix.rootfs.cache import list_cache, prune_cache
from virtmix.rootfs.clone import make_clone, mount_overlay, overlay_mounted_here, unmount_overlay
from virtmix.rootfs.customise import customise
from virtmix.rootfs.idmap import (
    host_supports_idmap,
    shift_listed,
    shift_tree,
)
from virtmix.rootfs.spec import ContainerSetup, InterfaceSetup, RootfsSpec
from virtmix.rootfs.storage import (
    CONTAINER_MARKER,
    Storage,
    remove_container_dir,
)
from virtmix.util.faults import fault_point
from virtmix.util.files import fsync_dir, fsync_tree, sync_filesystem
from virtmix.util.identity import IDMAP
from virtmix.util.idranges import IdMap, as_idmap, conflicting, pick_for
from virtmix.util.layout import TREE_DIR

__all__ = [
    "ContainerSetup", "InterfaceSetup", "ProvisionResult", "RootfsSpec", "Storage",
    "container_state", "ensure_mounted", "list_cache", "prune_cache", "provision_container",
    "remove_container_tree", "IDMAP",
]

PASSWORD_FILE = "root-password"


@dataclass(frozen=True)
class ProvisionResult:
    """What provisioning made; `password` is set only on the run that generated it."""

    name: str
    path: Path  # storage.tree_dir(name), the <filesystem><source dir=...>
    method: str  # "overlay" | "reflink" | "copy"
    idmap: IdMap | None  # (start 0, host uid, count, host gid); None = privileged
    password: str | None
    password_file: Path | None
    cache_entry: str
    created: bool  # False when the tree already existed (nothing was changed)
    stale: bool = False  # the existing tree came from another spec than the one asked for

    @property
    def privileged(self) -> bool:
        return self.idmap is None


def _effective_spec(spec: RootfsSpec, setup: ContainerSetup) -> RootfsSpec:
    # sshd is a package of the base, so it is part of the cache key like any other.
    return spec.with_packages("openssh-server") if setup.sshd else spec


def _lower(spec: RootfsSpec, storage: Storage, idmap: IdMap | None,
           progress: Progress | None) -> BaseTree:
    shift = None if idmap is None else (idmap[1], idmap[3], idmap[2])
    return ensure_lower(spec, storage, shift, progress)


def _choose_idmap(name: str, storage: Storage, idmap: tuple[int, ...] | None,
                  check_overlap: bool = True) -> IdMap:
    """The container's own range: the one asked for (checked against the others recorded
    in this storage), else a new one from its name (idranges)."""
    if idmap is None:
        return pick_for(name, str(storage.root))
    m = as_idmap(idmap)
    if m is None or m[0] != 0:
        raise RootfsError(f"container {name}: id map {idmap!r}: expected (0, uid, count[, gid])")
    # The shared range (idmap: shared, and 'auto' on a cgroup v1 host) is every such
    # container's by design: no conflict, and no read of every other state file (which
    # made provisioning N containers O(N^2)).
    shared = m == (*IDMAP, IDMAP[1])
    other = conflicting(name, m, str(storage.root)) if check_overlap and not shared else None
    if other is not None:
        raise ConflictError(
            f"container {name}: host ids {m[1]}..{m[1] + m[2] - 1} overlap those recorded "
            f"for container {other} in {storage.root}: root in one would own the other's "
            "files", hint="give it another idmap range, or leave idmap out (virtmix picks "
                          "a free range)")
    return m


def _result(storage: Storage, name: str, state: dict, password: str | None,
            created: bool, stale: bool = False) -> ProvisionResult:
    pw = state.get("password_file")
    return ProvisionResult(
        name=name, path=storage.tree_dir(name), method=state["method"],
        idmap=as_idmap(state.get("idmap")), password=password,
        password_file=Path(pw) if pw else None, cache_entry=state["cache_entry"],
        created=created, stale=stale)


def provision_container(name: str, spec: RootfsSpec, setup: ContainerSetup, storage: Storage,
                        *, privileged: bool = False, clone: str = "auto",
                        progress: Progress | None = None,
                        idmap: tuple[int, ...] | None = None,
                        check_overlap: bool = True) -> ProvisionResult:
    """Give container `name` its own customised tree at storage.container_dir(name)/rootfs.

    Builds the base when it is not cached. Idempotent: a container whose tree exists is
    only remounted (nothing is re-customised, no new password). Unprivileged by default:
    the tree is owned by the container's own host id range, `idmap` (0, uid, count[, gid])
    as the domain's <idmap> says, or else one picked from its name (idranges) and
    recorded in its state. check_overlap=False skips the check against the other ranges
    recorded in this storage (a staged tree bound for another id space, e.g. a guest).
    """
    if setup.name != name:
        raise RootfsError(f"container {name}: setup is for {setup.name!r}")
    if not privileged and not host_supports_idmap():
        raise RootfsError(
            f"container {name}: this kernel has no user namespaces, so it cannot run "
            "unprivileged (<idmap>)",
            hint="enable user namespaces (user.max_user_namespaces > 0), or set "
                 "privileged: true for this container (root inside = root on the host)")
    storage.ensure()
    with storage.lock(f"container-{name}"):
        state = storage.read_state(name)
        if state is not None:
            return _existing(storage, name, state, _effective_spec(spec, setup), privileged,
                             idmap)
        cdir = storage.container_dir(name)
        if os.path.lexists(cdir) and _half_marked(cdir):
            for p in cdir.iterdir():  # an older virtmix killed while writing the marker
                p.unlink()
            cdir.rmdir()
        if os.path.lexists(cdir):
            if not (cdir / CONTAINER_MARKER).is_file():
                raise ConflictError(f"{cdir}: exists and virtmix did not create it")
            remove_container_tree(storage, name)  # ours, left half-made by a crash
        chosen = None if privileged else _choose_idmap(name, storage, idmap, check_overlap)
        t0 = time.monotonic()
        lower = _lower(_effective_spec(spec, setup), storage, chosen, progress)
        lower_seconds = time.monotonic() - t0
        storage.make_container_dir(name)
        try:
            return _clone_and_customise(name, setup, storage, lower, chosen, clone,
                                        progress, lower_seconds)
        except BaseException:
            with contextlib.suppress(VirtmixError, OSError):
                remove_container_tree(storage, name)
            raise


def _half_marked(cdir: Path) -> bool:
    """A dir holding nothing but the temporary file of its marker: ours, killed early."""
    if cdir.is_symlink() or not cdir.is_dir():
        return False
    names = [p.name for p in cdir.iterdir()]
    return bool(names) and all(n.startswith(f".{CONTAINER_MARKER}.") and n.endswith(".part")
                               for n in names)


def _existing(storage: Storage, name: str, state: dict, spec: RootfsSpec,
              privileged: bool, idmap: tuple[int, ...] | None = None) -> ProvisionResult:
    """An already provisioned tree: remount it, never re-customise it (nor re-range it)."""
    if bool(state.get("privileged")) != privileged:
        # Switching would change who root is on the host: only a deliberate recreate may.
        raise RootfsError(
            f"container {name}: its tree was made with privileged={state.get('privileged')}",
            hint=f"destroy the container (and its tree) and create it again as "
                 f"privileged={privileged}")
    have = as_idmap(state.get("idmap"))
    if idmap is not None and have is not None and as_idmap(idmap) != have:
        raise RootfsError(
            f"container {name}: its tree is owned by host ids {have[1]}.. (recorded), the "
            f"definition asks for {idmap[1]}..",
            hint=f"keep the recorded range (idmap: {{uid: {have[1]}, gid: {have[3]}, "
                 f"count: {have[2]}}}), or destroy the container with its tree and apply")
    ensure_mounted(storage, name)
    want = spec.cache_key()
    stale = not state["cache_entry"].startswith(want)
    return _result(storage, name, state, None, created=False, stale=stale)


def _clone_and_customise(name: str, setup: ContainerSetup, storage: Storage, lower: BaseTree,
                         idmap: IdMap | None, clone: str, progress: Progress | None,
                         lower_seconds: float = 0.0) -> ProvisionResult:
    cdir = storage.container_dir(name)
    t0 = time.monotonic()
    if progress:
        progress(f"cloning {lower.entry} for {name}")
    fault_point("rootfs-clone-begin")
    path, method = make_clone(lower.tree, cdir, clone)
    fault_point("rootfs-clone-made")
    password = customise(path, setup, cdir / PASSWORD_FILE)
    privileged = idmap is None
    if idmap is not None:
        # What customise created is owned by host root; move it into the container's range.
        if method == "overlay":
            shift_listed(cdir / "upper", path, idmap[1], idmap[2], gid_offset=idmap[3])
        else:
            shift_tree(path, idmap[1], idmap[2], gid_offset=idmap[3])
    state = {
        "virtmix": 1, "name": name, "method": method, "cache_entry": lower.entry,
        "idmap": None if idmap is None else list(idmap), "privileged": privileged,
        # Making the lower layer for the container's own range (a shifted copy of the
        # base, once per range): the cost of isolated ranges, kept for `info` and benches.
        "shift_seconds": round(lower_seconds, 3) if not lower.cached else 0.0,
        "hostname": setup.fqdn, "sshd": setup.sshd,
        "root_login": ("password" if password else "ssh-key" if setup.ssh_keys else "locked"),
        "password_file": str(cdir / PASSWORD_FILE) if password else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "clone_seconds": round(time.monotonic() - t0, 3),
    }
    fault_point("rootfs-clone-before-state")
    # The clone's files on disk before the state says it is complete: an overlay clone's
    # own files are its upper dir (the base is complete already), so only they are
    # fsynced; a copy is flushed with its filesystem.
    if method == "overlay":
        fsync_tree(cdir / "upper")
        fsync_dir(cdir)
    else:
        sync_filesystem(cdir)
    storage.write_state(name, state)  # last: a state file means the tree is complete
    return _result(storage, name, state, password, created=True)


def container_state(storage: Storage, name: str) -> dict:
    """The recorded state of a container's tree (method, idmap, base...) for `info`."""
    state = storage.read_state(name)
    if state is None:
        raise NotFoundError(f"container {name}: no tree in {storage.container_dir(name)}")
    return state


def ensure_mounted(storage: Storage, name: str) -> None:
    """Remount an overlay clone (e.g. after a host reboot); does nothing when mounted."""
    state = container_state(storage, name)
    if state["method"] != "overlay":
        return
    cdir = storage.container_dir(name)
    lower = storage.cache_entry(state["cache_entry"]) / "tree"
    if not lower.is_dir():
        raise RootfsError(f"container {name}: its base {lower} is gone (pruned?)")
    mount_overlay(lower, cdir / "upper", cdir / "work", cdir / TREE_DIR)


def remove_container_tree(storage: Storage, name: str) -> None:
    """Delete a container's tree for good: unmount our overlay, then a confined delete."""
    cdir = storage.container_dir(name)
    if not os.path.lexists(cdir):
        raise NotFoundError(f"container tree {cdir}: does not exist")
    if cdir.is_symlink() or not (cdir / CONTAINER_MARKER).is_file():
        remove_container_dir(storage, name)  # refuses, with the precise reason
    # Also without a state file: a crash between mount and state leaves our overlay mounted.
    if overlay_mounted_here(cdir / TREE_DIR, cdir / "upper"):
        unmount_overlay(cdir / TREE_DIR, cdir / "upper")
    remove_container_dir(storage, name)
