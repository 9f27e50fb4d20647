"""Where a container's snapshots live, and deleting them when the container goes.

    STORAGE/snapshots/NAME/SNAP/{snapshot.json, data/, .virtmix-snapshot}

(snapshots/trees.py takes and restores them; this layer is below destroy, which deletes
them with the container's tree, as lxc-destroy -s and Incus do.) A snapshot is the
container's when its snapshot.json records the container's UUID: a same-named container of
another site sharing the storage keeps its own. Hidden `.SNAP.part-*` leftovers of a killed
snapshot go too.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
from pathlib import Path

from virtmix.rootfs.storage import Storage, remove_tree
from virtmix.util.layout import CONTAINERS_DIR, TREE_DIR

SNAPSHOTS_DIR = "snapshots"
MARKER = ".virtmix-snapshot"
META = "snapshot.json"


def snapshots_parent(storage_root: str | Path, name: str) -> str:
    return posixpath.join(str(storage_root), SNAPSHOTS_DIR, name)


def built_storage(tree: str) -> str | None:
    """STORAGE when tree is STORAGE/containers/NAME/rootfs (a tree virtmix built)."""
    cdir = posixpath.dirname(tree.rstrip("/"))
    if posixpath.basename(tree.rstrip("/")) == TREE_DIR and \
            posixpath.basename(posixpath.dirname(cdir)) == CONTAINERS_DIR:
        return posixpath.dirname(posixpath.dirname(cdir))
    return None


def _is_part(name: str) -> bool:
    return name.startswith(".") and ".part-" in name


def owned(storage_root: str | Path, name: str, uuid: str) -> list[Path]:
    """The snapshots (and half-taken parts) of container `name` with this UUID here."""
    parent = Path(snapshots_parent(storage_root, name))
    if not parent.is_dir() or parent.is_symlink():
        return []
    found = []
    for p in sorted(parent.iterdir()):
        if p.is_symlink() or not p.is_dir() or not (p / MARKER).is_file():
            continue
        if _is_part(p.name):
            found.append(p)
            continue
        try:
            meta = json.loads((p / META).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("uuid") in (uuid, None):
            found.append(p)
    return found


def delete_owned(storage_root: str | Path, name: str, uuid: str) -> list[str]:
    """Delete them (each checked for the marker, never through a symlink); the names of
    the complete snapshots deleted. The per-container directory goes once empty."""
    storage = Storage(storage_root)
    parent = Path(snapshots_parent(storage_root, name))
    gone = []
    for p in owned(storage_root, name, uuid):
        remove_tree(storage, p, parent, MARKER)
        if not _is_part(p.name):
            gone.append(p.name)
    try:
        os.rmdir(parent)
    except OSError:
        pass  # not empty (another container's of that name), or not there
    return gone


def delete_owned_sh(storage_root: str, name: str, uuid: str) -> str:
    """The same as shell, for a host behind ssh: prints the names of those deleted."""
    q = shlex.quote
    parent = snapshots_parent(storage_root, name)
    want = q(f'"uuid": "{uuid}"')
    return (f"[ -d {q(parent)} ] && [ ! -L {q(parent)} ] || exit 0; "
            f"for d in {q(parent)}/* {q(parent)}/.*.part-*; do "
            f"[ -d \"$d\" ] && [ ! -L \"$d\" ] && [ -f \"$d/{MARKER}\" ] || continue; "
            f"case \"${{d##*/}}\" in .*) rm -rf -- \"$d\"; continue;; esac; "
            f"grep -qF {want} \"$d/{META}\" 2>/dev/null || continue; "
            f"rm -rf -- \"$d\" && echo \"${{d##*/}}\"; done; rmdir {q(parent)} 2>/dev/null "
            "|| true")
