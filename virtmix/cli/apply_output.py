"""How plans and apply results read: text for admins, JSON for scripts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from virtmix.converge.apply import ApplyResult, Outcome
from virtmix.converge.plan import Item, Plan
from virtmix.converge.saved import FORMAT_VERSION as PLAN_FORMAT_VERSION
from virtmix.domain.tunables import UNLIMITED_KIB
from virtmix.util.units import format_kib

_SIGN = {"move": ">", "create": "+", "update": "~", "remove": "-", "refuse": "!",
         "unreachable": "!", "waiting": "+", "orphan": "?", "ok": "="}
_KIB_FIELDS = ("memory_kib", "memtune.")


def fmt_value(field: str, value: Any) -> str:
    if value is None or value == ():
        return "(unset)"
    if isinstance(value, int) and not isinstance(value, bool) and field.startswith(_KIB_FIELDS):
        return "unlimited" if value >= UNLIMITED_KIB else format_kib(value)
    if field == "metadata":
        return " ".join(f"{k}={v}" for k, v in value)
    if isinstance(value, tuple) and not any(isinstance(v, tuple) for v in value):
        return ", ".join("-" if v is None else str(v) for v in value)
    if isinstance(value, tuple):
        return "; ".join(", ".join("-" if x is None else str(x) for x in v)
                         if isinstance(v, tuple) else str(v) for v in value)
    return str(value)


def item_title(item: Item) -> str:
    where = f"on {item.host} ({item.uri})" if item.host != "?" else f"on {item.uri}"
    placed = f" ({item.placement})" if item.placement else ""
    return f"{item.kind} {item.address} {where}{placed}"


def item_to_dict(item: Item) -> dict[str, Any]:
    return {
        "target": item.target, "kind": item.kind, "name": item.name, "address": item.address,
        "host": item.host, "uri": item.uri, "status": item.status, "ops": item.ops,
        "changes": [{"field": c.field, "before": c.before, "after": c.after, "mode": c.mode}
                    for c in item.changes],
        "live": item.live, "pending_restart": item.pending_restart, "reason": item.reason,
        "state": item.state, "diff": item.diff,
        "placement": _placement(item),
        "move": ({"from_uri": item.move_from, "from_host": item.move_from_host,
                  "mode": item.move_mode} if item.status == "move" else None),
    }


def _placement(item: Item) -> dict[str, Any] | None:
    """Where placement put a new entry and why; None for entries that did not need it."""
    if not item.placement:
        return None
    policy = item.entry.placed if item.entry is not None else ""
    return {"host": item.host, "policy": policy, "reason": item.placement}


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as `plan -o json` prints it: schemas/plan-v1.json describes it."""
    return {"format_version": PLAN_FORMAT_VERSION, "site": plan.site,
            "pending": len(plan.pending), "prune": plan.prune,
            "items": [item_to_dict(i) for i in plan.items]}


def print_item(console: Console, item: Item, *, show_diff: bool = True) -> None:
    sign = _SIGN.get(item.status, " ")
    ops = ", ".join(item.ops)
    status = item.status
    if status == "move":  # "move (live)"/"move (cold)" for guests: the plan says which
        status += f" ({item.move_mode})" if item.move_mode != "tree" else ""
        ops = ", ".join(o for o in item.ops if o != "move")
    head = f"{sign} {item_title(item)}: {status}" + (f" ({ops})" if ops else "")
    console.print(escape(head))
    for c in item.changes:
        console.print(escape(f"    {c.field}: {fmt_value(c.field, c.before)} -> "
                             f"{fmt_value(c.field, c.after)}  [{c.mode}]"))
    if item.live:
        console.print(escape("    live now: " + ", ".join(
            f"{k}={fmt_value(k, v)}" for k, v in item.live.items())))
    if item.pending_restart:
        console.print(escape(f"    needs a restart for: {', '.join(item.pending_restart)} "
                             "(apply --restart, or restart it yourself)"))
    if item.reason:
        console.print(escape(f"    {item.reason}"))
    if show_diff and item.diff:
        for line in item.diff.rstrip("\n").splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            console.print("    " + escape(line), style=style)


def print_plan(console: Console, plan: Plan, *, show_diff: bool = True) -> None:
    shown = [i for i in plan.items if i.status != "ok" or i.pending_restart]
    for item in shown:
        print_item(console, item, show_diff=show_diff)
    counts: dict[str, int] = {}
    for item in plan.items:
        counts[item.status] = counts.get(item.status, 0) + 1
    orphans = counts.get("orphan", 0)
    if not plan.pending:
        console.print(f"site {plan.site}: nothing to do ({counts.get('ok', 0)} up to date"
                      + (f", {orphans} not in the inventory: --prune removes them" if orphans
                         else "") + ")")
        return
    parts = [f"{counts[k]} {word}" for k, word in (
        ("create", "to create"), ("move", "to move"), ("update", "to change"),
        ("remove", "to remove"),
        ("waiting", "waiting for their guest"), ("refuse", "refused"),
        ("unreachable", "unreachable"), ("ok", "up to date")) if counts.get(k)]
    if orphans:
        parts.append(f"{orphans} not in the inventory (--prune removes them)")
    console.print(f"site {plan.site}: " + ", ".join(parts))


def outcome_line(o: Outcome) -> str:
    mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped"}.get(o.status, o.status)
    took = f" ({o.seconds:.2f}s)" if o.seconds else ""
    return f"{mark}: {o.item.kind} {o.item.address}: {o.message}{took}"


def print_result(console: Console, errors: Console, result: ApplyResult) -> None:
    changed, failed = result.changed, result.failed
    if not changed and not failed:
        console.print("nothing to do: everything matches the inventory")
        return
    console.print(f"applied: {len(changed)} changed, {len(failed)} failed"
                  + (" (interrupted)" if result.interrupted else ""))
    for o in failed:
        errors.print(escape(f"  {outcome_line(o)}"))
