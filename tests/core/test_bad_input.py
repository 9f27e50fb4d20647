"""Every kind of bad input: one clear message naming file, key (and line), exit code 3,
no traceback, nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import app

runner = CliRunner()

GOOD_HOST = """\
hosts:
  hv1:
    cpus: "0-1"
    containers:
      c1:
        rootfs: {path: /srv/rootfs/busybox}
"""


def run_bad(tmp_path: Path, inventory: str, *, profiles: dict[str, str] | None = None):
    """Render the inventory into an output dir; assert the failure contract; return stderr."""
    inv = tmp_path / "site.yaml"
    inv.write_text(textwrap.dedent(inventory))
    if profiles:
        pdir = tmp_path / "profiles"
        pdir.mkdir()
        for name, text in profiles.items():
            (pdir / f"{name}.yaml").write_text(textwrap.dedent(text))
    out = tmp_path / "rendered"
    result = runner.invoke(app, ["render", str(inv), "--out", str(out)])
    assert result.exit_code == 3, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists(), "nothing may be written for a bad inventory"
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("virtmix: error: ")
    return result.stderr


def test_yaml_syntax_error(tmp_path):
    err = run_bad(tmp_path, "hosts:\n  hv1:\n    containers: {c1: [\n")
    assert "site.yaml:" in err and "YAML syntax error" in err


def test_unknown_key_with_did_you_mean(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        memroy: 1GiB\n")
    assert "site.yaml:7: hosts.hv1.containers.c1.memroy: unknown key 'memroy'" in err
    assert "did you mean 'memory'?" in err


def test_unknown_top_level_key(tmp_path):
    err = run_bad(tmp_path, "host: {}\n")
    assert "site.yaml:1: host: unknown key 'host'; did you mean 'hosts'?" in err


def test_wrong_type(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        vcpus: two\n")
    assert "site.yaml:7: hosts.hv1.containers.c1.vcpus:" in err and "integer" in err


def test_bad_cpuset_syntax(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        cpu: {cpuset: '0-'}\n")
    assert "hosts.hv1.containers.c1.cpu.cpuset" in err and "bad cpuset '0-'" in err


def test_cpuset_outside_host(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        cpu: {cpuset: '3'}\n")
    assert "site.yaml:7: hosts.hv1.containers.c1.cpu.cpuset" in err
    assert "names CPU 3, which host 'hv1' (cpus: 0-1) does not have" in err


def test_guest_memory_above_the_hosts(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST.replace('    cpus: "0-1"\n', '    cpus: "0-1"\n'
                                              '    memory: 1GiB\n')
                  + "    guests:\n      g1: {memory: 2GiB}\n")
    assert "site.yaml:9: hosts.hv1.guests.g1.memory: memory 2GiB is more than host 'hv1' " \
        "has (1GiB)" in err


@pytest.mark.parametrize("bridge", ["br/0", "a-very-long-bridge", "br 0", ".."])
def test_bridge_that_is_no_interface_name(tmp_path, bridge):
    err = run_bad(tmp_path, GOOD_HOST + f"        interfaces: [{{bridge: '{bridge}'}}]\n")
    assert "hosts.hv1.containers.c1.interfaces.0.bridge: not a Linux interface name" in err


def test_vcpupin_outside_host(tmp_path):
    err = run_bad(tmp_path, """\
        hosts:
          hv1:
            cpus: "0-1"
            guests:
              g: {vcpus: 2, cpu: {vcpupin: {0: "0", 1: "5"}}}
        """)
    assert "hosts.hv1.guests.g.cpu.vcpupin.1" in err and "CPU 5" in err


@pytest.mark.parametrize("shares", [1, 262145])
def test_shares_out_of_range(tmp_path, shares):
    err = run_bad(tmp_path, GOOD_HOST + f"        cpu: {{shares: {shares}}}\n")
    assert "hosts.hv1.containers.c1.cpu.shares" in err
    assert "262144" in err or "greater than or equal to 2" in err


def test_unparsable_memory(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        memory: lots\n")
    assert "site.yaml:7: hosts.hv1.containers.c1.memory: cannot parse size 'lots'" in err


def test_memory_without_unit_is_caught(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        memory: 512\n")
    assert "too small" in err and "512MiB" in err


def test_duplicate_name_on_one_connection(tmp_path):
    err = run_bad(tmp_path, """\
        hosts:
          hv1:
            containers: {web: {rootfs: {path: /x}}}
          hv2:
            containers: {web: {rootfs: {path: /x}}}
        """)
    assert "domain name 'web' is used twice on connection lxc:///system" in err
    assert "hosts.hv2.containers.web" in err


def test_same_name_on_different_connections_is_fine(tmp_path):
    inv = tmp_path / "site.yaml"
    inv.write_text("hosts:\n  a: {containers: {web: {rootfs: {path: /x}}}}\n"
                   "  b: {lxc_uri: 'lxc+ssh://root@b/system',\n"
                   "      containers: {web: {rootfs: {path: /x}}}}\n")
    assert runner.invoke(app, ["validate", str(inv)]).exit_code == 0


@pytest.mark.parametrize("name", ["../etc", "-rf", "a" * 65, "web/1", "we b", "x..y", ".hidden",
                                  "caf\u00e9", "semi;colon"])
def test_unsafe_names(tmp_path, name):
    err = run_bad(tmp_path, f'hosts:\n  hv1:\n    containers:\n      "{name}": {{}}\n')
    assert "site.yaml:4: hosts.hv1.containers" in err and "[key]" not in err
    assert "unsafe name" in err or "longer than 64" in err


def test_unknown_profile(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        profile: apach\n")
    assert "site.yaml:7: hosts.hv1.containers.c1.profile: unknown profile 'apach'" in err
    assert "did you mean 'apache'?" in err


def test_cyclic_profiles(tmp_path):
    err = run_bad(tmp_path, "profiles_dir: profiles\n" + GOOD_HOST + "        profile: a\n",
                  profiles={"a": "kind: container\nextends: b\n",
                            "b": "kind: container\nextends: a\n"})
    assert "profiles extend each other in a cycle: a -> b -> a" in err
    assert "b.yaml:2: extends" in err


def test_bad_value_in_profile_names_the_profile_file(tmp_path):
    err = run_bad(tmp_path, "profiles_dir: profiles\n" + GOOD_HOST + "        profile: p\n",
                  profiles={"p": "kind: container\nmemory: lots\n"})
    assert "p.yaml:2: memory: cannot parse size 'lots'" in err
    assert "from profile 'p'" in err


def test_container_inside_container(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        containers: {c2: {}}\n")
    assert "hosts.hv1.containers.c1.containers" in err
    assert "a container cannot live inside a container" in err


def test_guest_inside_container(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        guests: {g: {}}\n")
    assert "a KVM guest cannot live inside a container" in err


def test_vcpupin_on_container(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        cpu: {vcpupin: {0: '0'}}\n")
    assert "hosts.hv1.containers.c1.cpu.vcpupin" in err
    assert "libvirt's LXC driver has no vCPU threads" in err


def test_cgroup_typo_suggests_key(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        cgroup:\n          cpu.shares: 512\n"
                  "          cpuset.shares: 512\n")
    assert "site.yaml:9: hosts.hv1.containers.c1.cgroup.cpuset.shares" in err
    assert "did you mean 'cpu.shares'?" in err


def test_duplicate_yaml_key(tmp_path):
    err = run_bad(tmp_path, GOOD_HOST + "        memory: 1GiB\n        memory: 2GiB\n")
    assert "site.yaml:8: hosts.hv1.containers.c1.memory: key appears twice" in err


def test_nested_cpuset_checked_against_guest_vcpus(tmp_path):
    err = run_bad(tmp_path, """\
        hosts:
          hv1:
            guests:
              g:
                vcpus: 2
                lxc_uri: lxc+ssh://root@g/system
                containers: {c: {rootfs: {path: /x}, cpu: {cpuset: "2"}}}
        """)
    assert "names CPU 2, which guest 'g' (2 vcpus) does not have" in err


def test_undeclared_network(tmp_path):
    err = run_bad(tmp_path, "networks:\n  lan: {host: hv1}\n" + GOOD_HOST
                  + "        interfaces: [{network: lna}]\n")
    assert "hosts.hv1.containers.c1.interfaces.0.network" in err
    assert "did you mean 'lan'?" in err


def test_missing_file():
    result = runner.invoke(app, ["validate", "/nonexistent/site.yaml"])
    assert result.exit_code == 3
    assert "/nonexistent/site.yaml: inventory file not found" in result.stderr


def test_inventory_not_a_mapping(tmp_path):
    err = run_bad(tmp_path, "- just\n- a list\n")
    assert "an inventory must be a mapping" in err


def test_relative_storage_dir(tmp_path):
    err = run_bad(tmp_path, "settings: {storage_dir: var/virtmix}\n" + GOOD_HOST)
    assert "site.yaml:1: settings.storage_dir: storage_dir must be an absolute path" in err


def test_cgroup_error_in_a_profile_names_its_file_and_line(tmp_path):
    err = run_bad(tmp_path, "profiles_dir: profiles\n" + GOOD_HOST + "        profile: p\n",
                  profiles={"p": "kind: container\ncgroup:\n  cpu.shares: 99999999\n"})
    assert "p.yaml:3: p.cgroup.cpu.shares" in err


def test_unknown_parent_profile_names_the_extends_line(tmp_path):
    err = run_bad(tmp_path, "profiles_dir: profiles\n" + GOOD_HOST + "        profile: p\n",
                  profiles={"p": "kind: container\ndescription: x\nextends: nope\n"})
    assert "p.yaml:3: extends: unknown profile 'nope'" in err


@pytest.mark.parametrize("value", ["0b_", "0x_"])
def test_a_value_yaml_takes_for_a_number_it_cannot_convert(tmp_path, value):
    """PyYAML resolves these as YAML 1.1 integers and then fails inside int()."""
    err = run_bad(tmp_path, GOOD_HOST + f"        description: {value}\n")
    assert f"site.yaml:7: '{value}' looks like a number but is not one" in err
