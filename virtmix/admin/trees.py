"""The virtmix-made tree behind a container's root <filesystem>: `info` fields, remount on start.

A tree virtmix built lives at STORAGE/containers/NAME/rootfs beside its marker and its
state.json (virtmix.rootfs). Any other root (a path the admin gave, a virsh-defined
container) is not virtmix's, and these helpers leave it alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from virtmix.errors import NotFoundError, RootfsError
from virtmix.util.layout import CONTAINERS_DIR, TREE_DIR


def built_tree(rootfs: str | None) -> tuple[Any, str] | None:
    """(Storage, container name) when rootfs is a tree virtmix built, else None."""
    if not rootfs:
        return None
    path = Path(rootfs)
    if path.name != TREE_DIR or path.parent.parent.name != CONTAINERS_DIR:
        return None
    from virtmix.rootfs import Storage
    from virtmix.rootfs.storage import CONTAINER_MARKER

    if not (path.parent / CONTAINER_MARKER).is_file():
        return None
    return Storage(path.parent.parent.parent), path.parent.name


def tree_info(rootfs: str | None) -> dict[str, Any]:
    """How the tree was made (clone method, base cache entry, privileged), for `info`."""
    found = built_tree(rootfs)
    if found is None:
        return {}
    from virtmix.rootfs import container_state

    storage, name = found
    try:
        state = container_state(storage, name)
    except (NotFoundError, RootfsError):
        return {"clone": "unknown (no state file: an unfinished tree)"}
    return {"clone": state.get("method"), "base": state.get("cache_entry"),
            "tree": "privileged" if state.get("privileged") else
            f"unprivileged (ids shifted by {state['idmap'][1]})" if state.get("idmap")
            else "unprivileged",
            "root_login": state.get("root_login"), "tree_created": state.get("created")}


def remount(rootfs: str | None) -> bool:
    """Mount an overlay clone again when its mount is gone (host reboot); True if virtmix's.

    Without it libvirt would start the container on the empty mount point and fail to
    find its init.
    """
    found = built_tree(rootfs)
    if found is None:
        return False
    from virtmix.rootfs import ensure_mounted

    storage, name = found
    if storage.read_state(name) is None:
        return False  # unfinished: nothing to mount, libvirt will say what is missing
    ensure_mounted(storage, name)
    return True
