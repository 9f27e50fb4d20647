"""The core commands through the CLI: validate, render, schema, explain, user templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lxml import etree
from typer.testing import CliRunner

from virtmix.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "site.yaml"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_validate_example():
    r = invoke("validate", str(EXAMPLE))
    assert r.exit_code == 0, r.stderr
    assert "valid (4 containers, 1 guests, 1 networks on 1 hosts)" in r.stdout
    data = json.loads(invoke("validate", str(EXAMPLE), "-o", "json").stdout)
    assert data["valid"] is True and data["container"] == 4


def test_render_to_directory_writes_one_file_per_domain(tmp_path):
    r = invoke("render", str(EXAMPLE), "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["dbhost--mysql0.xml", "dbhost.xml", "network-lan.xml", "tiny.xml",
                     "vm0.xml", "vm1.xml"]
    doc = etree.parse(str(tmp_path / "out" / "vm1.xml"))
    assert doc.findtext("cputune/shares") == "1024"
    assert doc.find("vcpu").get("cpuset") == "1"


def test_render_one_entry_to_stdout():
    r = invoke("render", str(EXAMPLE), "--name", "dbhost/mysql0")
    assert r.exit_code == 0
    doc = etree.fromstring(r.stdout.encode())
    assert doc.get("type") == "lxc" and doc.findtext("name") == "mysql0"
    # inside a guest (cgroup v2): shares 512 are written as cpu.weight 50
    assert doc.findtext("cputune/shares") == "50"


def test_render_filters_by_host():
    r = invoke("render", str(EXAMPLE), "--host", "nope")
    assert r.exit_code == 6 and r.stdout == "" and "no host named 'nope'" in r.stderr


def test_render_out_onto_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "f.xml").write_text("keep")
    r = invoke("render", str(EXAMPLE), "--out", str(tmp_path / "f.xml"))
    assert r.exit_code == 2 and "not a directory" in r.stderr
    assert (tmp_path / "f.xml").read_text() == "keep"


ISSUE_EXAMPLE = """\
profiles_dir: profiles            # optional extra profile directory, relative to this file
networks:
  lan: {host: hv1, mode: isolated, bridge: vmixbr0, ipv4: 10.77.0.1/24, dhcp: true}
hosts:
  hv1:
    uri: qemu:///system
    lxc_uri: lxc:///system
    virt_type: kvm
    cpus: "0-1"
    memory: 8GiB
    containers:
      vm0:
        profile: apache
        cpu: {cpuset: "0", shares: 2048}
        memory: 256MiB
        interfaces: [{network: lan}]
      vm1:
        profile: apache
        cgroup: {cpu.shares: 1024, cpuset.cpus: "1"}
      tiny:
        rootfs: {path: /srv/rootfs/busybox}
        init: [/bin/sh, -c, "sleep infinity"]
        memory: 32MiB
    guests:
      dbhost:
        profile: kvm-small
        vcpus: 2
        memory: 2GiB
        cpu: {cpuset: "0-1", vcpupin: {0: "0", 1: "1"}, emulatorpin: "0", shares: 1024}
        disks: [{size: 8GiB}]
        interfaces: [{network: lan, ipv4: 10.77.0.20/24}]
        containers:
          mysql0: {profile: mysql-small, cpu: {shares: 512}}
"""


def test_the_issues_example_validates_as_given_in_a_fresh_directory(tmp_path):
    """Its `profiles_dir: profiles` names a directory a fresh copy does not have: that adds
    no profiles (a warning), it does not reject the inventory; once present, it is used."""
    inv = tmp_path / "site.yaml"
    inv.write_text(ISSUE_EXAMPLE)
    r = invoke("validate", str(inv))
    assert r.exit_code == 0, r.stderr
    assert "4 containers, 1 guests, 1 networks" in r.stdout
    assert f"profiles_dir {tmp_path / 'profiles'} does not exist" in r.stderr
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "apache.yaml").write_text("kind: container\nmemory: 99MiB\n")
    r = invoke("render", str(inv), "--name", "vm1")
    assert r.exit_code == 0 and "warning" not in r.stderr
    assert "<memory unit='KiB'>101376</memory>" in r.stdout  # the site's apache wins


def test_render_unknown_name_is_not_found():
    r = invoke("render", str(EXAMPLE), "--name", "ghost")
    assert r.exit_code == 6
    assert "no entry named 'ghost'" in r.stderr


def test_schema_is_json_schema_of_the_inventory():
    r = invoke("schema")
    schema = json.loads(r.stdout)
    assert schema["title"] == "virtmix inventory"
    assert {"hosts", "networks", "profiles_dir"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    container = schema["$defs"]["Container"]["properties"]
    assert {"cgroup", "rootfs", "cpu", "memory", "init"} <= set(container)


def test_explain_shows_origin_and_libvirt_element():
    r = invoke("explain", str(EXAMPLE), "vm1", "-o", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {row["setting"]: row for row in data["settings"]}
    assert rows["cpu.shares"]["source"] == "entry"             # from its cgroup: block
    assert rows["cpu.shares"]["libvirt"] == "<cputune><shares>"
    assert "cpu.weight=100" in rows["cpu.shares"]["note"]
    assert rows["memory"]["source"] == "profile apache"
    assert rows["init"]["source"] == "profile debian"
    assert data["profiles"] == ["apache", "debian"]


def test_explain_warns_about_settings_without_effect(tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text("hosts:\n  h:\n    containers:\n      c:\n        rootfs: {path: /x}\n"
                   "        vcpus: 4\n        memory: 64MiB\n"
                   "        memtune: {soft_limit: 128MiB}\n")
    data = json.loads(invoke("explain", str(inv), "c", "-o", "json").stdout)
    text = " ".join(data["warnings"])
    assert "vcpus has no effect on a container" in text
    assert "memtune.soft_limit (128MiB) is above memory (64MiB)" in text
    assert "runs privileged" in text


def _site_with_templates(tmp_path):
    """One container, rendered with the templates in tmp_path/tpl."""
    inv = tmp_path / "s.yaml"
    inv.write_text("templates_dir: tpl\nhosts:\n  h:\n    containers:\n"
                   "      c: {rootfs: {path: /x}}\n")
    return inv


def test_user_templates_override_shipped(tmp_path):
    shutil.copytree(REPO / "domain_templates", tmp_path / "tpl")
    lxc = tmp_path / "tpl" / "lxc.xml.j2"
    lxc.write_text(lxc.read_text().replace("<clock offset='utc'/>", "<clock offset='localtime'/>"))
    inv = _site_with_templates(tmp_path)
    r = invoke("render", str(inv))
    assert r.exit_code == 0, r.stderr
    assert "<clock offset='localtime'/>" in r.stdout


def test_user_override_of_a_partial_wins_though_partials_are_inlined(tmp_path):
    """Includes are pasted in at load time (render.InliningLoader) through the same search
    path, so a user's _interface.xml.j2 replaces ours inside the shipped lxc.xml.j2."""
    (tmp_path / "tpl").mkdir()
    part = (REPO / "domain_templates" / "_interface.xml.j2").read_text()
    (tmp_path / "tpl" / "_interface.xml.j2").write_text(
        part.replace("    </interface>", "      <link state='down'/>\n    </interface>"))
    inv = tmp_path / "s.yaml"
    inv.write_text("templates_dir: tpl\nnetworks: {n: {host: h, bridge: vbr9}}\n"
                   "hosts:\n  h:\n    containers:\n"
                   "      c: {rootfs: {path: /x}, interfaces: [{network: n}]}\n")
    r = invoke("validate", str(inv))
    assert r.exit_code == 0, r.stderr
    r = invoke("render", str(inv), "--name", "c")
    assert "<link state='down'/>" in r.stdout and "<memory unit='KiB'>" in r.stdout


def test_syntax_error_in_a_partial_names_the_partial_and_its_line(tmp_path):
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "_memtune.xml.j2").write_text("{% if d.memtune %}\n  <memtune>\n"
                                                       "{% for x in %}\n")
    inv = _site_with_templates(tmp_path)
    r = invoke("validate", str(inv))
    assert r.exit_code == 4 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'tpl' / '_memtune.xml.j2'}:3: template syntax error" in r.stderr, \
        r.stderr


def test_a_partial_that_includes_itself_is_a_template_error(tmp_path):
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "_memtune.xml.j2").write_text("{% include '_memtune.xml.j2' %}\n")
    inv = _site_with_templates(tmp_path)
    r = invoke("validate", str(inv))
    assert r.exit_code == 4 and "Traceback" not in r.stderr, r.stderr
    assert "_memtune.xml.j2" in r.stderr


def test_broken_user_template_is_a_template_error(tmp_path):
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "lxc.xml.j2").write_text("<domain>{{ d.nonexistent }}</domain>")
    inv = _site_with_templates(tmp_path)
    r = invoke("validate", str(inv))
    assert r.exit_code == 4
    assert "nonexistent" in r.stderr and "Traceback" not in r.stderr


def test_template_rendering_invalid_xml_fails_relaxng(tmp_path):
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "lxc.xml.j2").write_text(
        "<domain type='lxc'><name>{{ d.name }}</name><bogus/></domain>")
    inv = _site_with_templates(tmp_path)
    r = invoke("validate", str(inv))
    assert r.exit_code == 4
    assert "fails libvirt's domain.rng" in r.stderr


def test_values_are_xml_escaped(tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text("hosts:\n  h:\n    containers:\n      c:\n        rootfs: {path: /x}\n"
                   "        description: \"<b>&'quoted'</b>\"\n")
    r = invoke("render", str(inv))
    assert r.exit_code == 0
    doc = etree.fromstring(r.stdout.encode())
    assert doc.findtext("description") == "<b>&'quoted'</b>"


def test_explain_names_the_source_of_list_items_and_host_settings(tmp_path):
    inv = tmp_path / "site.yaml"
    inv.write_text(ISSUE_EXAMPLE.replace("profiles_dir: profiles ", "# no profiles_dir"))
    data = json.loads(invoke("explain", str(inv), "dbhost", "-o", "json").stdout)
    source = {r["setting"]: r["source"] for r in data["settings"]}
    assert source["cpu.vcpupin.0"] == source["interfaces.0.ipv4"] == "entry"
    assert source["disks.0"] == "entry" and source["virt_type"] == "host hv1"
    assert source["state"] == "default"


def test_compiled_templates_are_cached_but_never_stale(tmp_path, monkeypatch):
    """Bytecode is kept between runs (XDG_CACHE_HOME/virtmix/jinja); an edited partial is
    compiled again because the cache is keyed by the inlined source."""
    from virtmix.render.templates import environment

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copytree(REPO / "domain_templates", tmp_path / "tpl")
    inv = _site_with_templates(tmp_path)
    environment.cache_clear()
    assert "<clock offset='utc'/>" in invoke("render", str(inv)).stdout
    assert list((tmp_path / "cache" / "virtmix" / "jinja").iterdir())
    meta = tmp_path / "tpl" / "_metadata.xml.j2"
    meta.write_text(meta.read_text() + "  <!-- edited -->\n")
    environment.cache_clear()  # a new process, as far as jinja is concerned
    assert "<!-- edited -->" in invoke("render", str(inv)).stdout
    environment.cache_clear()
