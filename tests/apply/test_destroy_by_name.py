"""destroy NAME...: the names are found with one domain listing per connection, not a lookup
each (1,000 names took twice as long as the inventory's 1,000), then destroyed in parallel
(-j), with the same errors, refusals and exit codes as before. On test:///default.

The counts are libvirt calls made before destroy's workers start (the name resolution),
through the one libvirt-python class every connection uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import libvirt
import pytest
import yaml
from support.testdriver import held_test_driver
from typer.testing import CliRunner

import virtmix.cli.apply_cmds as apply_cmds
import virtmix.converge.destroy as destroy_mod
from virtmix.admin.targets import Session
from virtmix.cli import app
from virtmix.converge.destroy import site_targets

PFX = "vmixt-dbyname-"
URI = "test:///default"
COUNT = 6


@pytest.fixture
def held(monkeypatch, tmp_path):
    yield from held_test_driver(monkeypatch, tmp_path, PFX)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def _define(held, name: str, *, managed: bool = True, start: bool = True) -> None:
    meta = ("<metadata><vm:entry xmlns:vm='https://virtmix.dev/xmlns/domain/1' "
            "site='x' inventory='/nonexistent/x.yaml'/></metadata>" if managed else "")
    held.define(f"""<domain type='test'><name>{name}</name><memory>65536</memory>
      {meta}<os><type>hvm</type></os></domain>""")
    if start:
        held.start(name)


class Calls:
    """Counts libvirt's lookupByName and listAllDomains, and freezes the counts when
    destroy's workers start: what the name resolution cost."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lookups = self.listings = 0
        self.at_destroy: tuple[int, int] | None = None
        lookup, listing = libvirt.virConnect.lookupByName, libvirt.virConnect.listAllDomains

        def counted_lookup(conn, name):  # type: ignore[no-untyped-def]
            self.lookups += 1
            return lookup(conn, name)

        def counted_listing(conn, flags=0):  # type: ignore[no-untyped-def]
            self.listings += 1
            return listing(conn, flags)

        monkeypatch.setattr(libvirt.virConnect, "lookupByName", counted_lookup)
        monkeypatch.setattr(libvirt.virConnect, "listAllDomains", counted_listing)
        destroy_all = apply_cmds._destroy_all

        def frozen(*a, **kw):  # type: ignore[no-untyped-def]
            self.at_destroy = (self.lookups, self.listings)
            return destroy_all(*a, **kw)

        monkeypatch.setattr(apply_cmds, "_destroy_all", frozen)


def test_names_are_found_with_one_listing_and_no_lookup(held, monkeypatch):
    names = [f"{PFX}{i}" for i in range(COUNT)]
    for n in names:
        _define(held, n)
    _define(held, PFX + "other")  # not named: stays
    calls = Calls(monkeypatch)
    res = run("-c", URI, "destroy", *names, "--yes", "--force")
    assert res.exit_code == 0, res.output
    # Before: a lookup per name to find it and one more to read it again: 12 here.
    assert calls.at_destroy == (0, 1), calls.at_destroy
    left = {d.name for d in held.list_domains()}
    assert not left & set(names) and PFX + "other" in left
    for n in names:
        assert f"{n}: removed (forced off)" in res.output


def test_one_name_is_one_lookup_not_a_listing(held, monkeypatch):
    _define(held, PFX + "a")
    calls = Calls(monkeypatch)
    res = run("-c", URI, "destroy", PFX + "a", "--yes", "--force")
    assert res.exit_code == 0, res.output
    assert calls.at_destroy == (1, 0), calls.at_destroy


def test_an_inventory_is_read_with_one_listing_per_connection(held, monkeypatch, tmp_path):
    names = [f"{PFX}{i}" for i in range(COUNT)]
    for n in names[:4]:
        _define(held, n, managed=False)  # only their presence matters here
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump({"name": "x", "hosts": {"h1": {
        "uri": URI, "lxc_uri": URI,
        "containers": {n: {"rootfs": {"path": "/srv/t"}} for n in names}}}}))
    from virtmix.inventory.load import load_site

    site = load_site(inv)
    conn_calls = Calls(monkeypatch)
    targets = site_targets(site, {URI: held}, {})
    assert (conn_calls.lookups, conn_calls.listings) == (0, 1)
    assert [t.exists for t in targets] == [True] * 4 + [False] * 2
    assert all(t.foreign for t in targets[:4])  # not virtmix's: still refused later


def test_errors_come_in_the_order_of_the_names(held):
    _define(held, PFX + "a")
    res = run("-c", URI, "destroy", PFX + "a", PFX + "nope", PFX + "nada", "--yes")
    assert res.exit_code == 6, res.output
    assert f"no domain named '{PFX}nope'" in res.output
    assert held.get(PFX + "a").active  # nothing destroyed when a name is unknown
    res = run("-c", URI, "destroy", PFX + "a", "nope.yaml", "--yes")
    assert res.exit_code == 6 and "nope.yaml: no such inventory file" in res.output


def test_foreign_domains_among_many_are_refused_and_the_others_go(held):
    _define(held, PFX + "mine1")
    _define(held, PFX + "mine2", start=False)
    _define(held, PFX + "theirs", managed=False)
    res = run("-c", URI, "destroy", PFX + "mine1", PFX + "theirs", PFX + "mine2", "--yes",
              "--force")
    assert res.exit_code == 9 and "--force-foreign" in res.output, res.output
    assert f"{PFX}mine1: removed (forced off)" in res.output
    assert f"{PFX}mine2: removed" in res.output
    assert held.get(PFX + "theirs")  # kept
    res = run("-c", URI, "destroy", PFX + "theirs", "--yes", "--force-foreign")
    assert res.exit_code == 0 and f"{PFX}theirs: removed" in res.output


def test_named_domains_are_destroyed_in_parallel(held, monkeypatch):
    names = [f"{PFX}{i}" for i in range(4)]
    for n in names:
        _define(held, n)
    meet = threading.Barrier(2, timeout=10)
    seen: list[str] = []
    real = destroy_mod.destroy_target

    def paired(conn, t, **kw):  # type: ignore[no-untyped-def]
        seen.append(t.name)
        if len(seen) <= 2:
            meet.wait()  # broken (an error) unless two run at the same time
        return real(conn, t, **kw)

    monkeypatch.setattr(apply_cmds, "destroy_target", paired)
    res = run("-c", URI, "destroy", *names, "--yes", "--force", "-j", "4")
    assert res.exit_code == 0, res.output
    assert sorted(seen) == names


def test_find_each_keeps_finds_answers(held, tmp_path):
    _define(held, PFX + "a")
    _define(held, PFX + "b", start=False)
    session = Session(connect=URI)
    try:
        found = list(session.find_each([PFX + "b", PFX + "a", PFX + "b"]))
        assert [t.name for t in found] == [PFX + "b", PFX + "a", PFX + "b"]
        assert [t.record.state for t in found] == ["shutoff", "running", "shutoff"]
        assert session.find(PFX + "a").record.uuid == found[1].record.uuid
        each = session.find_each([PFX + "a", PFX + "zz"])
        assert next(each).name == PFX + "a"
        with pytest.raises(Exception, match="no domain named"):
            next(each)
    finally:
        session.close()


def test_backend_find_domains_leaves_out_the_unknown(held):
    names = [f"{PFX}f{i}" for i in range(40)]  # more than 32: read by a few threads
    for n in names:
        _define(held, n, start=False)
    got = held.find_domains([*names, PFX + "missing"])
    assert sorted(got) == sorted(names)
    assert all(r.name == n and r.xml for n, r in got.items())
    assert held.find_domains([]) == {}


def test_inventory_path_is_unchanged_for_the_cli(held, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "sbin" / "init").write_text("#!/bin/sh\n")
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump({"name": "dbn", "settings": {
        "storage_dir": str(tmp_path / "storage")}, "hosts": {"h1": {
            "uri": URI, "lxc_uri": URI, "containers": {
                n: {"rootfs": {"path": str(tree)}, "memory": "64MiB"}
                for n in (PFX + "i1", PFX + "i2")}}}}))
    assert run("--quiet", "apply", str(inv), "--yes").exit_code == 0
    res = run("destroy", str(inv), "--yes", "--force")
    assert res.exit_code == 0, res.output
    assert f"{PFX}i1: removed" in res.output and f"{PFX}i2: removed" in res.output
    assert not [d for d in held.list_domains() if d.name.startswith(PFX)]
    assert Path(inv).exists()
