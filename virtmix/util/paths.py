"""Where virtmix finds its shipped data (templates, profiles) in a checkout or an install."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _data_dir(name: str) -> Path:
    """A shipped directory: VIRTMIX_DATA, then the source checkout, then sys.prefix/share."""
    env = os.environ.get("VIRTMIX_DATA")
    candidates = [Path(env) / name] if env else []
    candidates += [
        Path(__file__).resolve().parents[2] / name,
        Path(sys.prefix) / "share" / "virtmix" / name,
    ]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def templates_dir() -> Path:
    return _data_dir("domain_templates")


def profiles_dir() -> Path:
    return _data_dir("profiles")
