"""The collection installs the way docs/ansible.md says, and works from where it landed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_galaxy_install_from_the_checkout_then_the_plugin_reads_an_inventory(tmp_path):
    dest = tmp_path / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # Not the checkout on sys.path (PYTHONPATH has it, for virtmix): Ansible would take its
    # ansible_collections/ as installed already.
    env.update({"ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "HOME": str(tmp_path),
                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False"})
    res = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install",
                          str(REPO / "ansible_collections/virtmix/site"), "-p", str(dest)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    installed = dest / "ansible_collections/virtmix/site/plugins"
    assert (installed / "connection/lxc.py").is_file(), res.stdout
    assert (installed / "inventory/inventory.py").is_file()
    # From the installed copy (not the checkout): ANSIBLE_COLLECTIONS_PATH names only dest.
    (tmp_path / "site.yaml").write_text((REPO / "tests/nesting/site_nested.yaml").read_text())
    (tmp_path / "site.virtmix.yml").write_text("plugin: virtmix.site.inventory\n"
                                               "inventory: site.yaml\n")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                        if p)  # virtmix importable, as the docs require
    res = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(tmp_path / "site.virtmix.yml"),
                          "--list"], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0 and "WARNING" not in res.stderr, res.stderr
    data = json.loads(res.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))
    assert data["_meta"]["hostvars"]["db"]["ansible_connection"] == "virtmix.site.lxc"
    assert set(data["kind_guest"]["hosts"]) == {"g1", "plain"}
