"""Writing files into root trees and images that virtmix builds (shared by rootfs, images,
and the busybox template).

A tree may already hold a symlink where we write (Debian ships some, e.g. /etc/resolv.conf):
it is replaced, never followed, so a write can only land inside the tree.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` (parents made) with `mode`, replacing a symlink there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def replace_symlink(path: Path, target: str) -> None:
    """Make `path` a symlink to `target` (parents made), replacing what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)
