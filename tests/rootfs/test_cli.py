"""`virtmix rootfs` sub-app through typer's CliRunner: exit codes, output, nothing created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli.rootfs_cmds import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_build_from_flags_finds_the_cached_base(storage, bookworm_shifted):
    res = runner.invoke(app, ["build", "--suite", "bookworm", "--storage", str(storage.root),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"{bookworm_shifted.entry}: cached" in res.output
    assert str(bookworm_shifted.tree) in res.output


def test_ls_table_and_json(storage, bookworm_base, bookworm_shifted):
    res = runner.invoke(app, ["ls", "--storage", str(storage.root), "--output", "json"])
    assert res.exit_code == 0, res.output
    entries = {e["entry"]: e for e in json.loads(res.output)}
    assert entries[bookworm_base[0].entry]["kind"] == "base"
    shifted = entries[bookworm_shifted.entry]
    assert shifted["kind"] == "shifted" and shifted["suite"] == "bookworm"
    assert shifted["size_bytes"] > 50 * 2**20
    table = runner.invoke(app, ["ls", "--storage", str(storage.root)])
    assert table.exit_code == 0 and bookworm_base[0].entry in table.output
    assert "SUITE" in table.output


def test_build_from_an_inventory_entry(storage, bookworm_shifted, tmp_path: Path):
    inv = tmp_path / "site.yaml"
    inv.write_text(
        "hosts:\n  hv1:\n    uri: qemu:///system\n    lxc_uri: lxc:///system\n"
        "    containers:\n      web0:\n        rootfs: {suite: bookworm}\n"
        f"settings: {{storage_dir: {storage.root}}}\n")
    res = runner.invoke(app, ["build", str(inv), "web0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"{bookworm_shifted.entry}: cached" in res.output


@pytest.mark.parametrize("args, code, msg", [
    (["build", "--variant", "huge"], 7, "variant 'huge'"),
    (["build", "--distro", "fedora"], 7, "distro 'fedora'"),
    (["build", "--hook", "/nonexistent/hook.sh"], 2, "not a file"),
    (["build", "--package", "a;b"], 7, "package"),
    (["ls", "--output", "yaml"], 2, "expected table or json"),
])
def test_bad_input_exits_with_its_code_and_creates_nothing(tmp_path: Path, args, code, msg):
    st = tmp_path / "storage"
    res = runner.invoke(app, [*args, "--storage", str(st)])
    assert res.exit_code == code, res.output
    assert msg in res.output
    assert not (st / "cache").exists() or not any((st / "cache").iterdir())


def test_prune_on_an_empty_storage(tmp_path: Path):
    res = runner.invoke(app, ["prune", "--storage", str(tmp_path / "st")])
    assert res.exit_code == 0 and "nothing to prune" in res.output


def test_prune_of_an_unknown_entry_is_not_found(tmp_path: Path):
    res = runner.invoke(app, ["prune", "--entry", "debian-nosuch", "--storage",
                              str(tmp_path / "st")])
    assert res.exit_code == 6 and "no cache entry 'debian-nosuch'" in res.output
