"""Profiles: reusable YAML settings with single-parent `extends:`, merged under an entry.

A profile file is `NAME.yaml` with `kind: container|guest`, an optional `extends: PARENT`,
and any keys an entry of that kind accepts. Shipped profiles live in the repo's `profiles/`;
an inventory's `profiles_dir` adds more and overrides shipped ones of the same name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtmix.errors import InventoryError
from virtmix.inventory import cgroups
from virtmix.inventory.yamlio import line_of, read_yaml

PROFILE_META_KEYS = ("kind", "extends", "description")


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    extends: str | None
    settings: dict[str, Any]
    path: Path
    text: str = field(repr=False, default="")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge `over` onto `base`: mappings merge recursively, anything else replaces.

    Lists replace rather than append, so an entry can shrink a profile's list; an explicit
    null replaces too, which is how an entry removes a profile's limit.
    """
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and \
                not _switches_form(key, out[key], value):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _switches_form(key: str, base: dict[str, Any], over: dict[str, Any]) -> bool:
    """`rootfs:`/`image:` are either {path: ...} or a build spec {distro, suite, ...}: an
    entry that names the other form replaces its profile's, never mixes with it (merged, a
    profile's path would silently win over the entry's suite)."""
    return key in ("rootfs", "image") and ("path" in base) != ("path" in over)


def fold_cgroup(layer: dict[str, Any], *, file: str, keypath: str, text: str | None = None,
                at: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Move a layer's `cgroup:` block into its cpu/memtune/blkio sections.

    Done per layer (before merging) so that precedence between profile and entry is the same
    whichever spelling each uses. Setting a field both ways in one layer is an error. `text`
    and `at` (the layer's YAML and its key path in it) give errors their line.
    """
    if "cgroup" not in layer or layer["cgroup"] is None:
        layer.pop("cgroup", None)
        return layer

    def line(*keys: Any) -> int | None:
        return line_of(text, (*at, "cgroup", *keys)) if text is not None else None

    layer = dict(layer)
    try:
        sections = cgroups.to_settings(layer.pop("cgroup"))
    except cgroups.CgroupKeyError as exc:
        raise InventoryError(str(exc), file=file, key=f"{keypath}.cgroup.{exc.key}",
                             line=line(exc.key)) from None
    for section, values in sections.items():
        existing = layer.get(section) or {}
        if not isinstance(existing, dict):
            continue  # the model reports the wrong type
        clash = sorted(set(existing) & set(values))
        if clash:
            raise InventoryError(
                f"{section}.{clash[0]} is set both in '{section}:' and in 'cgroup:'",
                file=file, key=f"{keypath}.cgroup", line=line(),
            )
        layer[section] = {**existing, **values}
    return layer


class ProfileLibrary:
    """All profiles visible to one inventory, loaded lazily and resolved with their parents."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs  # later directories override earlier ones
        self._files: dict[str, Path] = {}
        for d in dirs:
            if d.is_dir():
                for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                    self._files[p.stem] = p
        self._loaded: dict[str, Profile] = {}
        self._resolved: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {}

    def missing_dirs(self) -> list[Path]:
        return [d for d in self.dirs if not d.is_dir()]

    def names(self) -> list[str]:
        return sorted(self._files)

    def used_files(self) -> list[Path]:
        """The files of every profile loaded so far (what an inventory's entries used)."""
        return sorted(self._files[n] for n in self._loaded if n in self._files)

    def get(self, name: str, *, used_at: tuple[Any, ...]) -> Profile:
        """Load profile `name`; `used_at` is (file, keypath[, line]) of the reference, for
        errors."""
        if name in self._loaded:
            return self._loaded[name]
        path = self._files.get(name)
        if path is None:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            missing = "".join(f" (profiles_dir {d} does not exist)" for d in self.missing_dirs())
            raise InventoryError(
                f"unknown profile {name!r}{hint} (known: {', '.join(self.names()) or 'none'})"
                + missing, file=used_at[0], key=used_at[1],
                line=used_at[2] if len(used_at) > 2 else None,
            )
        data, text = read_yaml(path, what="profile")
        if not isinstance(data, dict):
            raise InventoryError("a profile must be a mapping", file=str(path))
        kind = data.get("kind")
        if kind not in ("container", "guest"):
            raise InventoryError(f"expected 'container' or 'guest', got {kind!r}",
                                 file=str(path), key="kind",
                                 line=line_of(text, ("kind",)))
        extends = data.get("extends")
        if extends is not None and not isinstance(extends, str):
            raise InventoryError("expected a profile name", file=str(path), key="extends",
                                 line=line_of(text, ("extends",)))
        settings = {k: v for k, v in data.items() if k not in PROFILE_META_KEYS}
        if "profile" in settings:
            raise InventoryError("a profile names its parent with 'extends:', not 'profile:'",
                                 file=str(path), key="profile",
                                 line=line_of(text, ("profile",)))
        settings = fold_cgroup(settings, file=str(path), keypath=name, text=text)
        prof = Profile(name, kind, extends, settings, path, text)
        self._loaded[name] = prof
        return prof

    def resolve(self, name: str, kind: str, *, used_at: tuple[Any, ...]
                ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Merged settings of `name` and its ancestors, and the chain (nearest first)."""
        cached = self._resolved.get(name)
        if cached is None:
            chain: list[Profile] = []
            current: str | None = name
            where = used_at
            while current is not None:
                if any(p.name == current for p in chain):
                    cycle = " -> ".join([p.name for p in chain] + [current])
                    raise InventoryError(f"profiles extend each other in a cycle: {cycle}",
                                         file=str(chain[-1].path), key="extends",
                                         line=line_of(chain[-1].text, ("extends",)))
                prof = self.get(current, used_at=where)
                chain.append(prof)
                where = (str(prof.path), "extends", line_of(prof.text, ("extends",)))
                current = prof.extends
            for parent, child in zip(chain[1:], chain, strict=False):
                if parent.kind != child.kind:
                    raise InventoryError(
                        f"profile {child.name!r} ({child.kind}) extends {parent.name!r}, "
                        f"a {parent.kind} profile", file=str(child.path), key="extends",
                        line=line_of(child.text, ("extends",)))
            merged: dict[str, Any] = {}
            for prof in reversed(chain):
                merged = deep_merge(merged, prof.settings)
            cached = (merged, tuple(p.name for p in chain))
            self._resolved[name] = cached
        merged, chain_names = cached
        prof = self._loaded[name]
        if prof.kind != kind:
            raise InventoryError(
                f"profile {name!r} is for a {prof.kind}, but this entry is a {kind}",
                file=used_at[0], key=used_at[1])
        return merged, chain_names  # deep_merge never mutates, so sharing is safe

    def origin_layers(self, name: str) -> list[Profile]:
        """The profiles of a chain, root first (for `explain`)."""
        out: list[Profile] = []
        current: str | None = name
        while current is not None and current in self._loaded:
            out.append(self._loaded[current])
            current = self._loaded[current].extends
        return list(reversed(out))
