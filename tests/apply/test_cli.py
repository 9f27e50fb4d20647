"""plan / apply / destroy through the CLI on test:///default: exit codes, messages, JSON.

test:///default keeps its state while a connection to it stays open, so one is held for
each test; every CLI call opens and closes its own, as in real use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.testdriver import held_test_driver
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.util.locking import lock_name

PFX = "vmixt-apply-cli-"
URI = "test:///default"


@pytest.fixture
def held(monkeypatch, tmp_path):
    yield from held_test_driver(monkeypatch, tmp_path, PFX)


def inventory(tmp_path: Path, tree: Path, names: list[str], **extra) -> Path:
    doc = {"name": "cli", "settings": {"storage_dir": str(tmp_path / "storage")},
           "hosts": {"h1": {"uri": URI, "lxc_uri": URI, "containers": {
               n: {"rootfs": {"path": str(tree)}, "memory": "64MiB", **extra} for n in names}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_plan_apply_plan_cycle(held, tmp_path, tree):
    inv = str(inventory(tmp_path, tree, [PFX + "a", PFX + "b"]))
    res = run("plan", inv)
    assert res.exit_code == 10, res.output
    assert f"+ container {PFX}a" in res.output and "2 to create" in res.output
    data = json.loads(run("plan", inv, "--output", "json").stdout)
    assert data["pending"] == 2 and data["items"][0]["ops"] == ["prepare", "define", "start"]
    res = run("--quiet", "apply", inv, "--yes")
    assert res.exit_code == 0, res.output
    assert "2 changed, 0 failed" in res.output
    assert {d.name for d in held.list_domains() if d.name.startswith(PFX)} == {PFX + "a",
                                                                               PFX + "b"}
    res = run("apply", inv, "--yes")
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = run("plan", inv)
    assert res.exit_code == 0 and "nothing to do (2 up to date)" in res.output


def test_apply_needs_yes_without_a_terminal(held, tmp_path, tree):
    inv = str(inventory(tmp_path, tree, [PFX + "a"]))
    res = run("apply", inv)
    assert res.exit_code == 2 and "--yes" in res.output
    assert not [d for d in held.list_domains() if d.name.startswith(PFX)]


def test_foreign_domain_refused_by_plan_apply_and_destroy(held, tmp_path, tree):
    name = PFX + "foreign"
    held.define(f"""<domain type='test'><name>{name}</name><memory>65536</memory>
      <os><type>hvm</type></os></domain>""")
    inv = str(inventory(tmp_path, tree, [name, PFX + "ok"]))
    res = run("plan", inv)
    assert res.exit_code == 9 and "not defined by virtmix" in res.output
    res = run("--quiet", "apply", inv, "--yes")
    assert res.exit_code == 11, res.output
    assert "1 of 2 entries failed" in res.output and f"container {name}" in res.output
    assert held.get(PFX + "ok").active  # the other entry went on
    assert held.get(name).metadata is None
    res = run("-c", URI, "destroy", name, "--yes")
    assert res.exit_code == 9 and "--force-foreign" in res.output
    assert held.get(name)  # still there
    res = run("-c", URI, "destroy", name, "--yes", "--force-foreign")
    assert res.exit_code == 0 and f"{name}: removed" in res.output


def test_destroy_inventory_needs_confirmation_then_removes(held, tmp_path, tree):
    inv = str(inventory(tmp_path, tree, [PFX + "a"]))
    assert run("--quiet", "apply", inv, "--yes").exit_code == 0
    res = run("destroy", inv)
    assert res.exit_code == 2 and held.get(PFX + "a")
    res = run("destroy", inv, "--yes")
    assert res.exit_code == 0 and f"{PFX}a: removed" in res.output
    assert not [d for d in held.list_domains() if d.name.startswith(PFX)]
    res = run("destroy", inv, "--yes")
    assert res.exit_code == 0 and "nothing to destroy" in res.output


def test_destroy_unknown_name_is_not_found(held):
    res = run("-c", URI, "destroy", PFX + "nope", "--yes")
    assert res.exit_code == 6 and "no domain named" in res.output


def test_locked_inventory_refuses_with_no_wait_and_waits_otherwise(held, tmp_path, tree):
    inv = inventory(tmp_path, tree, [PFX + "a"])
    lock = tmp_path / "locks" / lock_name("inventory", str(inv.resolve()))
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # root-only, as virtmix makes it
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f,fcntl.LOCK_EX); "
        "f.write('pid 1 (test holder)'); f.flush(); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2]))"), str(lock), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = run("apply", str(inv), "--yes", "--no-wait")
        assert res.exit_code == 9 and "locked by pid 1 (test holder)" in res.output
        t0 = time.monotonic()
        res = run("--quiet", "apply", str(inv), "--yes", "--lock-timeout", "30")
        assert res.exit_code == 0, res.output
        assert "waiting for inventory" in res.output and time.monotonic() - t0 > 0.5
    finally:
        holder.kill()
        holder.wait()


def _with_unreachable_host(tmp_path, tree) -> tuple[Path, str]:
    """PFX+good on the held test driver, PFX+lost on a host whose URI cannot connect."""
    bad = f"test://{tmp_path}/no-such-node.xml"
    doc = yaml.safe_load(inventory(tmp_path, tree, [PFX + "good"]).read_text())
    doc["hosts"]["h2"] = {"uri": bad, "lxc_uri": bad, "containers": {
        PFX + "lost": {"rootfs": {"path": str(tree)}, "memory": "64MiB"}}}
    inv = tmp_path / "two.yaml"
    inv.write_text(yaml.safe_dump(doc))
    return inv, bad


def test_unreachable_host_is_named_and_the_others_go_on(held, tmp_path, tree):
    inv, bad = _with_unreachable_host(tmp_path, tree)
    res = run("plan", str(inv))
    assert res.exit_code == 5 and f"could not read {bad}: cannot connect to libvirt" in \
        res.output
    res = run("--quiet", "apply", str(inv), "--yes")
    assert res.exit_code == 11 and f"container {PFX}lost" in res.output
    assert held.get(PFX + "good").active


def test_destroy_with_an_unreachable_host_says_so(held, tmp_path, tree):
    inv, bad = _with_unreachable_host(tmp_path, tree)
    run("--quiet", "apply", str(inv), "--yes")
    res = run("destroy", str(inv), "--yes")
    assert res.exit_code == 11 and f"{PFX}lost: failed: cannot connect" in res.output
    assert f"{PFX}good: removed" in res.output


def test_plan_and_apply_warn_about_privileged_containers(held, tmp_path, tree):
    """A given tree runs privileged unless `privileged: false`: plan and apply say so (on
    stderr, so JSON and scripts are unaffected); nothing to do, nothing said."""
    inv = inventory(tmp_path, tree, [PFX + "a"])
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["h1"]["containers"][PFX + "b"] = {"rootfs": {"path": str(tree)},
                                                     "privileged": False}
    inv.write_text(yaml.safe_dump(doc))
    res = run("plan", str(inv))
    assert res.exit_code == 10
    assert f"warning: {PFX}a runs privileged" in res.stderr and f"{PFX}b" not in res.stderr
    assert "warning" not in run("plan", str(inv), "-o", "json").stderr
    del doc["hosts"]["h1"]["containers"][PFX + "b"]  # its tree is not shifted: not started
    inv.write_text(yaml.safe_dump(doc))
    res = run("apply", str(inv), "--yes", "--quiet")
    assert res.exit_code == 0 and f"warning: {PFX}a runs privileged" in res.stderr, res.output
    assert "warning" not in run("apply", str(inv), "--yes").stderr


def test_connect_that_no_host_uses_is_an_error_not_nothing_to_do(held, tmp_path, tree):
    inv = str(inventory(tmp_path, tree, [PFX + "a"]))
    for verb in (["plan", inv], ["apply", inv, "--yes"], ["destroy", inv, "--yes"]):
        res = run("-c", "test:///nonexistent/node.xml", *verb)
        assert res.exit_code == 2 and "no host of" in res.output, (verb, res.output)
    assert not held.list_domains() or not any(d.name.startswith(PFX)
                                              for d in held.list_domains())


def test_apply_when_no_daemon_answers_is_a_libvirt_error(monkeypatch, tmp_path, tree):
    """Nothing it could do: exit 5 with the URI and how to start the daemon, as plan."""
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(tmp_path / "locks"))
    dead = "lxc+unix:///system?socket=" + str(tmp_path / "no-such.sock")
    inv = tmp_path / "dead.yaml"
    inv.write_text(yaml.safe_dump({"settings": {"storage_dir": str(tmp_path / "st")},
                                   "hosts": {"h": {"lxc_uri": dead, "containers": {
                                       PFX + "a": {"rootfs": {"path": str(tree)}}}}}}))
    for verb in (["plan", str(inv)], ["apply", str(inv), "--yes"]):
        res = run(*verb)
        assert res.exit_code == 5, (verb, res.output)
        assert f"error: could not read {dead}" in res.stderr and "setup-host.sh" in res.stderr
