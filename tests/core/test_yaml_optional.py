"""pyyaml-rs is an optional extra (`fast-yaml`): virtmix loads the same inventories, with the
same results and errors, when it is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Load an inventory and print what the model holds; with BLOCK, as if pyyaml-rs were absent.
SCRIPT = """
import json, sys
if sys.argv[1] == "block":
    sys.modules["pyyaml_rs"] = None  # any import of it now fails, as when not installed
from virtmix.errors import InventoryError
from virtmix.inventory import yamlio
from virtmix.inventory.load import load_site
try:
    site = load_site(sys.argv[2])
    out = site.inventory.model_dump(mode="json")
except InventoryError as exc:
    out = {"error": str(exc)}
print(json.dumps({"fast": yamlio.fast_loader_available(), "site": out}, sort_keys=True))
"""


def _load(mode: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(path)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def test_pyproject_makes_pyyaml_rs_an_extra():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pyyaml-rs") for d in meta["dependencies"])
    assert any(d.startswith("pyyaml-rs") for d in meta["optional-dependencies"]["fast-yaml"])


@pytest.mark.parametrize("name", ["site.yaml", "nested.yaml"])
def test_inventories_load_the_same_without_pyyaml_rs(name):
    without = _load("block", ROOT / "examples" / name)
    assert without["fast"] is False and "error" not in without["site"]
    normal = _load("normal", ROOT / "examples" / name)
    assert normal["site"] == without["site"]


def test_errors_are_the_same_without_pyyaml_rs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  h:\n    containers:\n      a: {memory: [1}\n")
    without, normal = _load("block", bad), _load("normal", bad)
    assert "YAML syntax error" in without["site"]["error"]
    assert normal["site"] == without["site"]
