"""<blkiotune>: the block I/O weight."""

from __future__ import annotations

from typing import Any

from virtmix.domain.xmlnode import Element, int_at


def weight(root: Element) -> int | None:
    return int_at(root, "blkiotune/weight")


def fields(root: Element, out: dict[str, Any]) -> None:
    out["blkio.weight"] = weight(root)
