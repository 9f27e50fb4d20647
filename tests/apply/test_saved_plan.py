"""`plan -o json` against schemas/plan-v1.json, and saved plans: `plan --out`, `apply PLAN`,
and each cause of a stale plan (inventory, profile, template, observed state)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from support.testdriver import held_test_driver
from typer.testing import CliRunner

from virtmix.cli import app

PFX = "vmixt-saved-"
URI = "test:///default"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas/plan-v1.json").read_text())


@pytest.fixture
def held(monkeypatch, tmp_path):
    yield from held_test_driver(monkeypatch, tmp_path, PFX)


def site(tmp_path: Path, tree: Path, names: list[str], memory: str = "64MiB") -> Path:
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    prof = profiles / "small.yaml"
    if not prof.exists():
        prof.write_text("kind: container\ncpu: {shares: 512}\n")
    doc = {"name": "saved", "profiles_dir": str(profiles),
           "settings": {"storage_dir": str(tmp_path / "storage")},
           "hosts": {"h1": {"uri": URI, "lxc_uri": URI, "containers": {
               n: {"profile": "small", "rootfs": {"path": str(tree)}, "memory": memory}
               for n in names}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def mine(conn) -> dict[str, str]:
    return {d.name: d.state for d in conn.list_domains() if d.name.startswith(PFX)}


def test_plan_json_matches_schema_v1(held, tmp_path, tree):
    inv = str(site(tmp_path, tree, [PFX + "a", PFX + "b"]))
    data = json.loads(run("plan", inv, "-o", "json").stdout)
    assert data["format_version"] == 1
    jsonschema.validate(data, SCHEMA)
    assert run("apply", inv, "--yes").exit_code == 0
    site(tmp_path, tree, [PFX + "a"], memory="96MiB")  # an update with changes, an orphan
    data = json.loads(run("plan", inv, "-o", "json").stdout)
    jsonschema.validate(data, SCHEMA)
    statuses = {i["name"]: i["status"] for i in data["items"]}
    assert statuses == {PFX + "a": "update", PFX + "b": "orphan"}
    # The schema is not a formality: a wrong shape fails it.
    data["items"][0]["status"] = "frobnicate"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_saved_plan_applies_exactly_it(held, tmp_path, tree):
    inv = str(site(tmp_path, tree, [PFX + "a", PFX + "b"]))
    plan = tmp_path / "out" / "p.json"
    plan.parent.mkdir()
    res = run("plan", inv, "--out", str(plan))
    assert res.exit_code == 10, res.output
    data = json.loads(plan.read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["saved"]["inventory"]["path"] == str(Path(inv).resolve())
    assert any(f["path"].endswith("small.yaml") for f in data["saved"]["files"])
    assert any(f["path"].endswith("lxc.xml.j2") for f in data["saved"]["files"])
    assert not list(plan.parent.glob(".p.json.*"))  # no temp file left behind
    assert mine(held) == {}  # plan --out changes nothing
    res = run("apply", str(plan))
    assert res.exit_code == 0, res.output
    assert mine(held) == {PFX + "a": "running", PFX + "b": "running"}
    # Applied: the same plan is now stale (both domains were defined since).
    res = run("apply", str(plan))
    assert res.exit_code == 13, res.output
    assert "Saved plan" in res.output and "is stale" in res.output
    assert f"domain {PFX}a on {URI} was defined" in res.output


def test_saved_plan_without_changes_is_a_noop(held, tmp_path, tree):
    inv = str(site(tmp_path, tree, [PFX + "a"]))
    assert run("apply", inv, "--yes").exit_code == 0
    before = held.get(PFX + "a")
    plan = tmp_path / "p.json"
    assert run("plan", inv, "--out", str(plan)).exit_code == 0
    res = run("apply", str(plan))
    assert res.exit_code == 0 and "nothing to do" in res.output, res.output
    assert held.get(PFX + "a") == before


@pytest.mark.parametrize("cause", ["inventory", "profile", "template", "state", "autostart",
                                   "redefined", "undefined", "new-profile-dir-file"])
def test_stale_plan_is_refused(held, tmp_path, tree, cause):
    names = [PFX + "a", PFX + "b"]
    inv = site(tmp_path, tree, names)
    assert run("apply", str(inv), "--yes").exit_code == 0
    templates = tmp_path / "templates"
    if cause == "template":  # a user templates_dir: its files are part of the plan
        from virtmix.util import paths

        templates.mkdir()
        (templates / "lxc.xml.j2").write_text((paths.templates_dir() / "lxc.xml.j2").read_text())
        doc = yaml.safe_load(inv.read_text())
        doc["templates_dir"] = str(templates)
        inv.write_text(yaml.safe_dump(doc))
    site(tmp_path, tree, names, memory="96MiB") if cause != "template" else None
    if cause == "template":
        doc = yaml.safe_load(inv.read_text())
        for c in doc["hosts"]["h1"]["containers"].values():
            c["memory"] = "96MiB"
        inv.write_text(yaml.safe_dump(doc))
    plan = tmp_path / "p.json"
    assert run("plan", str(inv), "--out", str(plan)).exit_code == 10
    expect = ""
    if cause == "inventory":
        inv.write_text(inv.read_text() + "\n# an edit\n")
        expect = f"the inventory {inv.resolve()} changed"
    elif cause == "profile":
        prof = tmp_path / "profiles" / "small.yaml"
        prof.write_text("kind: container\ncpu: {shares: 256}\n")
        expect = f"profile {prof} changed"
    elif cause == "template":
        (templates / "lxc.xml.j2").write_text((templates / "lxc.xml.j2").read_text() + "\n")
        expect = f"template {templates / 'lxc.xml.j2'} changed"
    elif cause == "state":
        held.destroy(PFX + "a")  # stopped behind virtmix's back
        expect = f"domain {PFX}a on {URI} changed"
    elif cause == "autostart":
        held.set_autostart(PFX + "b", True)
        expect = f"domain {PFX}b on {URI} changed"
    elif cause == "redefined":  # e.g. `virsh edit` gave it another vCPU
        xml = held._conn.lookupByName(PFX + "b").XMLDesc(2)  # inactive
        held._conn.defineXML(xml.replace("<vcpu placement='static'>1</vcpu>",
                                       "<vcpu placement='static'>2</vcpu>"))
        assert "<vcpu placement='static'>2" in held._conn.lookupByName(PFX + "b").XMLDesc(2)
        expect = f"domain {PFX}b on {URI} changed"
    elif cause == "undefined":
        held.destroy(PFX + "b")
        held.undefine(PFX + "b")
        expect = f"domain {PFX}b on {URI} was undefined"
    elif cause == "new-profile-dir-file":
        (tmp_path / "profiles" / "small.yaml").unlink()
        expect = "small.yaml is gone"
    states = mine(held)
    res = run("apply", str(plan))
    assert res.exit_code == 13, res.output
    assert "is stale" in res.output and expect in res.output, res.output
    assert "run `virtmix plan INVENTORY --out PLAN` again" in res.output
    assert "Traceback" not in res.output
    assert mine(held) == states  # nothing was applied
    assert held.get(PFX + "a").xml.count("<memory unit='KiB'>65536") == 1  # still 64 MiB


def test_saved_plan_refuses_new_options(held, tmp_path, tree):
    inv = str(site(tmp_path, tree, [PFX + "a"]))
    plan = tmp_path / "p.json"
    run("plan", inv, "--out", str(plan))
    res = run("apply", str(plan), "--prune")
    assert res.exit_code == 2 and "fixed when it was made" in res.output
    assert mine(held) == {}


def test_not_a_plan_file(held, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"site": "x"}')
    res = run("apply", str(bad))
    assert res.exit_code == 2 and "not a saved virtmix plan" in res.output
