"""<memory> and <memtune>: a domain's memory size and limits, in KiB."""

from __future__ import annotations

from typing import Any

from virtmix.domain.xmlnode import Element, kib_at
from virtmix.util.units import kib_from

KEYS = ("hard_limit", "soft_limit", "swap_hard_limit", "min_guarantee")


def memory_kib(root: Element) -> int | None:
    return kib_at(root, "memory")


def read(root: Element) -> dict[str, int]:
    """The memtune limits that are set, in KiB."""
    out: dict[str, int] = {}
    node = root.find("memtune")
    if node is None:
        return out
    for limit in node:  # one pass over the children (plans read thousands of documents)
        if limit.tag in KEYS and limit.text and limit.text.strip():
            out[limit.tag] = kib_from(int(limit.text), limit.get("unit"))
    return out


def fields(root: Element, out: dict[str, Any]) -> None:
    out["memory_kib"] = memory_kib(root)
    limits = read(root)
    for key in KEYS:
        out[f"memtune.{key}"] = limits.get(key)
