"""Where virtmix keeps things under its storage directory: one definition for the renderer,
which writes these paths into domain XML, and for the code that makes the files there.

    STORAGE/containers/NAME/rootfs      a built container's tree (overlay mount point)
    STORAGE/guests/NAME/FILE            a guest's disks, kernel, initrd, serial log, keys
"""

from __future__ import annotations

CONTAINERS_DIR = "containers"
TREE_DIR = "rootfs"
GUESTS_DIR = "guests"
# In a guest directory apply made (disks from `size:`, copied kernels): destroy
# --delete-rootfs deletes guest files only where it finds this (or the image builder's).
GUEST_FILES_MARKER = ".virtmix-files"


def container_tree(storage: str, name: str) -> str:
    """The tree of a container virtmix builds (plain strings: views render 11k of these)."""
    return f"{storage}/{CONTAINERS_DIR}/{name}/{TREE_DIR}"


def guest_path(storage: str, name: str, file: str = "") -> str:
    """A guest's directory, or a file in it."""
    base = f"{storage}/{GUESTS_DIR}/{name}"
    return f"{base}/{file}" if file else base
