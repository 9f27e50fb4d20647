"""typer `autocompletion=` callbacks: the same sources as the fast path (cli/complete.py),
for completions that typer itself resolves."""

from __future__ import annotations

import os

import typer

from virtmix.cli.complete import _match, cgroup_keys, domain_names, host_names, profile_names


# -- typer's autocompletion callbacks (the slow path uses the same sources) --------------
def _globals(ctx) -> tuple[str | None, str | None]:
    """-c and -i as typer parsed them for this completion (the app callback does not run)."""
    root = ctx.find_root() if ctx is not None else None
    params = root.params if root is not None else {}
    return (params.get("connect"),
            params.get("inventory") or os.environ.get("VIRTMIX_INVENTORY"))


def complete_domain(ctx: typer.Context, incomplete: str) -> list[str]:
    return _match(domain_names(*_globals(ctx)), incomplete)


def complete_host(ctx: typer.Context, incomplete: str) -> list[str]:
    inventory = ctx.params.get("inventory") or _globals(ctx)[1]
    return _match(host_names(str(inventory) if inventory else None), incomplete)


def complete_profile(ctx: typer.Context, incomplete: str) -> list[str]:
    return _match(profile_names(_globals(ctx)[1]), incomplete)


def complete_cgroup_key(incomplete: str) -> list[str]:
    return _match(cgroup_keys(), incomplete)


__all__ = ["complete_cgroup_key", "complete_domain", "complete_host", "complete_profile"]
