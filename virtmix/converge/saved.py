"""Saved plans: `plan --out PLAN` writes the plan with what it was made from; `apply PLAN`
applies exactly it, or refuses it as stale.

The file is the contract (as Terraform's saved plans): it holds sha256 fingerprints of the
inventory, of every profile it used and of the templates it was rendered with, and a digest
of what libvirt held for each domain and network of the plan (UUID, state, autostart and
the fields virtmix owns, config and live). `apply PLAN` checks the files, reads libvirt
again, plans again from the same inputs and applies only if every fingerprint and every
item (its operations and the XML it will define) is as saved. Planning is a pure function
of those inputs, so an unchanged world gives the saved plan back; anything else is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from virtmix.converge.plan import Item, Plan
from virtmix.errors import StalePlanError, UsageError
from virtmix.inventory.site import Site

FORMAT_VERSION = 1  # of `plan -o json` and saved plans; schemas/plan-v1.json
KIND = "virtmix-plan"
RERUN = "run `virtmix plan INVENTORY --out PLAN` again and apply the new plan"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_files(site: Site) -> list[Path]:
    """Every file the plan was made from besides libvirt: profiles used, templates."""
    from virtmix.render.templates import user_templates
    from virtmix.util import paths

    files = list(site.profiles.used_files()) if site.profiles is not None else []
    user = user_templates(site)
    for d in [Path(user)] if user else []:
        files += sorted(d.glob("*.j2"))
    files += sorted(paths.templates_dir().glob("*.j2"))
    return files


def file_fingerprints(site: Site) -> dict[str, Any]:
    return {"inventory": {"path": str(site.path), "sha256": sha256_file(site.path)},
            "files": [{"path": str(p), "sha256": sha256_file(p)} for p in input_files(site)]}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def item_key(item: Item) -> str:
    return f"{item.target} {item.uri} {item.name}"


def observed_fingerprints(plan: Plan) -> dict[str, str]:
    """item key -> digest of what libvirt held for it ("absent", "unreachable")."""
    out: dict[str, str] = {}
    observed = plan.observed or {}
    for item in plan.items:
        conn = observed.get(item.uri)
        if conn is None or conn.error:
            out[item_key(item)] = "unreachable"
            continue
        if item.target == "network":
            net = conn.networks.get(item.name)
            out[item_key(item)] = "absent" if net is None else _digest(
                {"uuid": net.uuid, "active": net.active, "persistent": net.persistent,
                 "fields": net.fields})
            continue
        dom = conn.domains.get(item.name)
        out[item_key(item)] = "absent" if dom is None else _digest(
            {"uuid": dom.uuid, "state": dom.state, "active": dom.active,
             "persistent": dom.persistent, "autostart": dom.autostart,
             "metadata": dom.metadata, "config": dom.config, "live": dom.live,
             "live_cpuset": dom.live_cpuset})
    return out


def item_contract(item: Item) -> dict[str, Any]:
    """What apply will do to one item: compared between the saved plan and a fresh one."""
    return {"key": item_key(item), "status": item.status, "ops": list(item.ops),
            "xml": item.xml if item.ops else None,
            "live": json.loads(json.dumps(item.live, default=str))}


def saved_section(site: Site, plan: Plan, options: dict[str, Any]) -> dict[str, Any]:
    return {"kind": KIND, "options": options, **file_fingerprints(site),
            "observed": observed_fingerprints(plan),
            "contract": [item_contract(i) for i in plan.items]}


def write_plan(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same directory, fsync, rename, fsync the dir."""
    path = path.resolve() if path.parent.exists() else path
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # the plan holds domain XML: keep it to root, as libvirt does
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def is_saved_plan(path: Path) -> bool:
    """Whether `path` is a saved plan (JSON of kind virtmix-plan), not an inventory."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def read_plan(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable saved plan: {exc}") from None
    saved = data.get("saved") if isinstance(data, dict) else None
    if not isinstance(saved, dict) or saved.get("kind") != KIND:
        raise UsageError(f"{path}: not a saved virtmix plan (no saved.kind {KIND!r})",
                         hint="make one with `virtmix plan INVENTORY --out PLAN`")
    if data.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path}: saved plan format_version {data.get('format_version')!r}, "
                         f"this virtmix reads {FORMAT_VERSION}", hint=RERUN)
    return dict(data)


def check_files(path: Path, data: dict[str, Any]) -> None:
    """Refuse the plan when the inventory, a profile or a template changed since."""
    saved = data["saved"]
    for rec in [saved["inventory"], *saved["files"]]:
        f = Path(rec["path"])
        what = "the inventory" if rec is saved["inventory"] else (
            "template" if f.suffix == ".j2" else "profile")
        try:
            now = sha256_file(f)
        except OSError:
            now = None
        if now != rec["sha256"]:
            change = "is gone" if now is None else "changed"
            raise StalePlanError(f"Saved plan {path} is stale: {what} {f} {change} since the "
                                 "plan was made", hint=RERUN)


def check_site_files(path: Path, data: dict[str, Any], site: Site) -> None:
    """Refuse when the inventory now uses other profile or template files than it did."""
    now = {rec["path"] for rec in file_fingerprints(site)["files"]}
    was = {rec["path"] for rec in data["saved"]["files"]}
    if now != was:
        diff = sorted(now ^ was)
        raise StalePlanError(f"Saved plan {path} is stale: the inventory now uses other "
                             f"profiles or templates ({', '.join(diff)})", hint=RERUN)


def check_plan(path: Path, data: dict[str, Any], plan: Plan) -> None:
    """Refuse when libvirt holds something else now, or the plan would differ."""
    saved = data["saved"]
    now = observed_fingerprints(plan)
    for key in sorted(set(now) | set(saved["observed"])):
        before, after = saved["observed"].get(key), now.get(key)
        if before != after:
            target, uri, name = key.split(" ", 2)
            if before is None or after is None:
                change = "appeared" if before is None else "is gone"
            elif after == "absent":
                change = "was undefined"
            elif before == "absent":
                change = "was defined"
            elif after == "unreachable":
                obs = (plan.observed or {}).get(uri)
                change = "became unreachable" + (f" ({obs.error})" if obs and obs.error
                                                   else "")
            else:
                change = "changed (state, definition or autostart)"

            raise StalePlanError(f"Saved plan {path} is stale: {target} {name} on {uri} "
                                 f"{change} since the plan was made", hint=RERUN)
    contract = [item_contract(i) for i in plan.items]
    if contract != saved["contract"]:
        raise StalePlanError(f"Saved plan {path} is stale: planning again from the same "
                             "inputs gives other changes (was virtmix upgraded?)", hint=RERUN)


__all__ = ["FORMAT_VERSION", "check_files", "check_plan", "check_site_files", "is_saved_plan",
           "read_plan", "saved_section", "write_plan"]
