"""What destroy removes and keeps (docs/apply.md): guest disks by default, --keep-disks keeps
them and says where; a kept disk is checked when apply reuses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.testdriver import held_test_driver
from typer.testing import CliRunner

from virtmix.cli import app

URI = "test:///default"
PFX = "vmixt-keeps-"


@pytest.fixture
def held(monkeypatch, tmp_path):
    yield from held_test_driver(monkeypatch, tmp_path, PFX)


def _inventory(tmp_path: Path) -> Path:
    kernel = tmp_path / "vmlinuz"
    kernel.write_text("k")
    doc = {"name": "keeps", "settings": {"storage_dir": str(tmp_path / "storage"),
                                         "shutdown_timeout": 5},
           "hosts": {"h1": {"uri": URI, "lxc_uri": URI, "virt_type": "qemu", "guests": {
               PFX + "g": {"memory": "256MiB", "disks": [{"size": "16MiB"}],
                           "boot": {"kernel": str(kernel)}}}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_destroy_deletes_guest_disks_by_default_and_shuts_down_first(held, tmp_path):
    inv = str(_inventory(tmp_path))
    assert run("--quiet", "apply", inv, "--yes").exit_code == 0
    gdir = tmp_path / "storage" / "guests" / (PFX + "g")
    assert (gdir / "disk0.qcow2").is_file()
    res = run("destroy", inv, "--yes")
    assert res.exit_code == 0, res.output
    assert f"{PFX}g: removed, deleted {gdir} (shut down)" in res.output
    assert not gdir.exists()


def test_keep_disks_keeps_them_says_where_and_apply_checks_them(held, tmp_path):
    inv = str(_inventory(tmp_path))
    assert run("--quiet", "apply", inv, "--yes").exit_code == 0
    gdir = tmp_path / "storage" / "guests" / (PFX + "g")
    res = run("destroy", inv, "--yes", "--keep-disks", "--force")
    assert res.exit_code == 0, res.output
    assert f"{PFX}g: removed (forced off)" in res.output
    assert "kept:" in res.output and f"{gdir} (its disks/files" in res.output
    assert (gdir / "disk0.qcow2").is_file()
    assert run("--quiet", "apply", inv, "--yes").exit_code == 0  # reused: still whole


def test_a_damaged_kept_disk_is_not_reused(held, tmp_path):
    inv = str(_inventory(tmp_path))
    assert run("--quiet", "apply", inv, "--yes").exit_code == 0
    assert run("destroy", inv, "--yes", "--keep-disks", "--force").exit_code == 0
    disk = tmp_path / "storage" / "guests" / (PFX + "g") / "disk0.qcow2"
    with open(disk, "r+b") as f:  # what a crash mid-write could leave: a broken header
        f.seek(0)
        f.write(b"\0" * 512)
    res = run("--quiet", "apply", inv, "--yes")
    assert res.exit_code == 11
    assert f"the kept disk {disk} is damaged" in res.output
