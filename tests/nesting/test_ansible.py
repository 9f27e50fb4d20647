"""virtmix inventory ansible: the site as an Ansible YAML/JSON inventory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.handoff.ansible import LXC_PLUGIN, QEMU_PLUGIN, ansible_inventory

HERE = Path(__file__).resolve().parent


def test_groups_and_connection_vars(nested_site):
    inv = ansible_inventory(nested_site)["all"]
    assert inv["vars"]["virtmix_site"] == "nestunit"
    ch = inv["children"]
    assert ch["virtmix_hosts"]["hosts"]["hv1"]["ansible_connection"] == "local"
    g1 = ch["virtmix_guests"]["hosts"]["g1"]
    assert g1["ansible_connection"] == "ssh" and g1["ansible_host"] == "10.213.99.10"
    st = "/var/tmp/vmixt-nest-unit-storage/ssh"
    # Only the host key virtmix pinned is trusted, whatever ansible.cfg says.
    assert g1["ansible_ssh_common_args"] == (
        f"-F {st}/config -o UserKnownHostsFile={st}/known_hosts "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes")
    assert g1["ansible_host_key_checking"] is True and g1["ansible_user"] == "root"
    assert g1["ansible_ssh_private_key_file"] == f"{st}/id_ed25519"
    plain = ch["virtmix_guests"]["hosts"]["plain"]
    assert plain["ansible_connection"] == QEMU_PLUGIN
    assert plain["ansible_libvirt_uri"] == "qemu:///system"
    cts = ch["virtmix_containers"]["hosts"]
    # "web" is on the host and in g1: both kept, told apart by where they live.
    assert set(cts) == {"hv1-web", "db", "g1-web"}
    db = cts["db"]
    assert db["ansible_connection"] == LXC_PLUGIN and db["ansible_host"] == "db"
    assert db["virtmix_parent"] == "g1"
    assert db["virtmix_uri"] == "lxc+ssh://root@10.213.99.10/system"
    assert (db["virtmix_cpuset"], db["virtmix_shares"]) == ("1", 512)
    assert set(ch["guest_g1"]["hosts"]) == {"db", "g1-web"}
    assert set(ch["host_hv1"]["hosts"]) == {"g1", "plain", "hv1-web", "db", "g1-web"}
    assert set(ch["kind_guest"]["hosts"]) == {"g1", "plain"}
    assert db["virtmix_lxc_guest"] == "10.213.99.10"
    assert db["virtmix_lxc_ssh_config"] == "/var/tmp/vmixt-nest-unit-storage/ssh/config"
    assert db["virtmix_settings"]["cpu"]["shares"] == 512


def test_cli_yaml_and_json_agree():
    runner = CliRunner()
    site = str(HERE / "site_nested.yaml")
    as_yaml = runner.invoke(app, ["inventory", "ansible", site])
    as_json = runner.invoke(app, ["inventory", "ansible", site, "--format", "json"])
    assert as_yaml.exit_code == 0 and as_json.exit_code == 0, as_yaml.output + as_json.output
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)
    # -o is the format as on every verb (`-o json`), never a file named json
    assert runner.invoke(app, ["inventory", "ansible", site, "-o", "json"]).stdout == \
        as_json.stdout


def test_cli_bad_format_is_a_usage_error():
    res = CliRunner().invoke(app, ["inventory", "ansible", str(HERE / "site_nested.yaml"),
                                   "--format", "ini"])
    assert res.exit_code == 2 and "expected yaml or json" in res.output


def test_image_ls_reads_the_inventory_storage(tmp_path):
    site = tmp_path / "s.yaml"
    site.write_text((HERE / "site_nested.yaml").read_text().replace(
        "/var/tmp/vmixt-nest-unit-storage", str(tmp_path / "st")))
    res = CliRunner().invoke(app, ["-i", str(site), "image", "ls"])
    assert res.exit_code == 0 and f"no guest images in {tmp_path}/st/images" in res.output
    res = CliRunner().invoke(app, ["image", "ls", "--storage", str(tmp_path), "-o", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []


def test_inventory_plugin_with_the_real_ansible_inventory(tmp_path):
    """plugin: virtmix.site.inventory, read by ansible-inventory itself (no libvirt needed)."""
    import os
    import subprocess
    import sys

    repo = HERE.parents[1]
    (tmp_path / "site.yaml").write_text((HERE / "site_nested.yaml").read_text())
    # Ansible's constructed options on top: a keyed group and a composed variable.
    (tmp_path / "site.virtmix.yml").write_text(
        "plugin: virtmix.site.inventory\ninventory: site.yaml\n"
        "keyed_groups: [{key: virtmix_kind, prefix: k}]\n"
        "compose: {mem_mib: virtmix_memory_kib // 1024}\n")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(repo),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i",
                          str(tmp_path / "site.virtmix.yml"), "--list"], capture_output=True,
                         text=True, env=env, cwd="/", timeout=120)
    assert res.returncode == 0 and "WARNING" not in res.stderr, res.stderr
    # ansible-core 2.19 marks what inventory plugins give as untrusted: {"__ansible_unsafe": v}
    data = json.loads(res.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))
    assert set(data["guest_g1"]["hosts"]) == {"db", "g1-web"}
    assert set(data["kind_container"]["hosts"]) == {"hv1-web", "db", "g1-web"}
    db = data["_meta"]["hostvars"]["db"]
    assert db["ansible_connection"] == "virtmix.site.lxc"
    assert db["virtmix_lxc_guest"] == "10.213.99.10"
    assert db["virtmix_settings"]["cpu"]["cpuset"] == "1"
    assert db["virtmix_site_settings"]["storage_dir"] == "/var/tmp/vmixt-nest-unit-storage"
    assert data["_meta"]["hostvars"]["g1"]["ansible_connection"] == "ssh"
    assert set(data["k_guest"]["hosts"]) == {"g1", "plain"}
    assert data["_meta"]["hostvars"]["g1"]["mem_mib"] == 1024
