"""The lxc-* verbs on real busybox containers that virsh defined (foreign to virtmix)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import (
    LXC,
    PFX,
    QEMU,
    assert_clean_error,
    cgroup_file,
    domain_id,
    domstate,
    inactive_xml,
    virsh,
    vm,
)
from support import busybox_lxc_xml, cleanup_domains, container_init_pid, lxc_run, wait_for

CT_PFX = PFX + "ct-"
CT = CT_PFX + "run"
OFF = CT_PFX + "off"


def virsh_define(tmp: Path, xml: str) -> None:
    path = tmp / "domain.xml"
    path.write_text(xml)
    virsh(LXC, "define", str(path))


def wait_booted(name: str) -> None:
    wait_for(lambda: lxc_run(name, ["test", "-e", "/run/virtmix-init-done"]).returncode == 0,
             10, f"busybox init of {name}")


@pytest.fixture(scope="module")
def containers(lxc_conn, busybox_tree, tmp_path_factory) -> Iterator[None]:
    """CT running and OFF defined-but-stopped, both defined with virsh (foreign)."""
    cleanup_domains(lxc_conn, CT_PFX)
    tmp = tmp_path_factory.mktemp("admin-ct")
    virsh_define(tmp, busybox_lxc_xml(CT, busybox_tree))
    virsh_define(tmp, busybox_lxc_xml(OFF, busybox_tree))
    virsh(LXC, "start", CT)
    wait_booted(CT)
    yield
    cleanup_domains(lxc_conn, CT_PFX)


pytestmark = pytest.mark.usefixtures("containers")


def test_ls_shows_virsh_defined_containers_as_foreign():
    rows = {r["name"]: r for r in json.loads(vm("ls", "-o", "json").stdout)}
    assert rows[CT]["kind"] == "lxc" and rows[CT]["state"] == "running"
    assert rows[CT]["managed"] == "foreign" and rows[CT]["uri"] == LXC
    assert rows[CT]["memory_kib"] == 65536 and rows[CT]["memory"] == "64MiB"
    assert rows[CT]["host"] == "localhost"
    assert rows[OFF]["state"] == "shutoff"
    table = vm("ls").stdout
    assert re.search(rf"^{CT}\s+lxc\s+running\s+localhost\s.*64MiB\s+-\s+foreign$", table,
                     re.M)  # SITE is '-' for a foreign domain
    # -c limits the listing to that connection.
    assert CT not in vm("-c", QEMU, "ls").stdout
    assert CT in vm("-c", LXC, "ls").stdout


def test_info_reports_state_and_init_pid():
    data = json.loads(vm("info", CT, "-o", "json").stdout)
    assert data["state"] == "running" and data["kind"] == "lxc"
    assert data["init_pid"] == container_init_pid(CT)
    assert data["rootfs"] and data["managed"] is False
    text = vm("info", CT).stdout
    assert re.search(r"^state:\s+running$", text, re.M)
    assert re.search(rf"^init pid:\s+{container_init_pid(CT)}$", text, re.M)


def test_cgroup_cpu_shares_live_and_persistent():
    assert vm("cgroup", CT, "cpu.shares", "2048").stdout.strip() == "2048"
    did = domain_id(LXC, CT)
    assert cgroup_file("cpu", did, "cpu.shares").read_text().strip() == "2048"
    assert "<shares>2048</shares>" in inactive_xml(LXC, CT)
    assert re.search(r"cpu_shares\s*:\s*2048", virsh(LXC, "schedinfo", CT))
    assert vm("cgroup", CT, "cpu.shares").stdout.strip() == "2048"
    # cpu.weight is the same setting in cgroup v2 units.
    assert vm("cgroup", CT, "cpu.weight").stdout.strip() == "200"


def test_cgroup_cpuset_writes_the_cgroup_and_the_definition():
    did = domain_id(LXC, CT)
    cpus = cgroup_file("cpuset", did, "cpuset.cpus")
    try:
        assert vm("cgroup", CT, "cpuset.cpus", "0").stdout.strip() == "0"
        assert cpus.read_text().strip() == "0"
        assert "cpuset='0'" in inactive_xml(LXC, CT)
        # The container's own processes are confined too.
        allowed = lxc_run(CT, ["grep", "Cpus_allowed_list", "/proc/1/status"]).stdout
        assert allowed.split()[-1] == "0"
    finally:
        all_cpus = f"0-{os.cpu_count() - 1}" if os.cpu_count() > 1 else "0"
        vm("cgroup", CT, "cpuset.cpus", all_cpus)
    assert cpus.read_text().strip() == all_cpus


def test_cgroup_memory_limits_live_and_persistent():
    did = domain_id(LXC, CT)
    assert vm("cgroup", CT, "memory.limit_in_bytes", "48M").stdout.strip() == "50331648"
    assert cgroup_file("memory", did, "memory.limit_in_bytes").read_text().strip() == \
        "50331648"
    assert vm("cgroup", CT, "memory.soft_limit_in_bytes", "32MiB").stdout.strip() == \
        str(32 * 1024 * 1024)
    assert cgroup_file("memory", did, "memory.soft_limit_in_bytes").read_text().strip() == \
        str(32 * 1024 * 1024)
    xml = inactive_xml(LXC, CT)
    assert "<hard_limit unit='KiB'>49152</hard_limit>" in xml
    assert "<soft_limit unit='KiB'>32768</soft_limit>" in xml
    # "max" lifts the soft limit again (v2 spelling of the same key).
    vm("cgroup", CT, "memory.high", "max")
    assert "soft_limit" not in inactive_xml(LXC, CT)


def test_cgroup_on_a_stopped_domain_changes_the_definition_only():
    out = json.loads(vm("cgroup", OFF, "cpu.shares", "512", "-o", "json").stdout)
    assert out == {"name": OFF, "key": "cpu.shares", "live": None, "persistent": "512"}
    assert "<shares>512</shares>" in inactive_xml(LXC, OFF)
    assert domstate(LXC, OFF) == "shut off"


def test_cgroup_unknown_key_says_what_it_meant():
    before = inactive_xml(LXC, CT)
    proc = vm("cgroup", CT, "cpuset.shares", "100", check=None)
    assert_clean_error(proc, 2, "'cpuset.shares' is not a cgroup setting",
                       "did you mean 'cpu.shares'?")
    proc = vm("cgroup", CT, "cpu.shares", "lots", check=None)
    assert_clean_error(proc, 2, "cpu.shares", "expected an integer")
    assert inactive_xml(LXC, CT) == before


def test_freeze_and_unfreeze_are_seen_by_virsh():
    vm("freeze", CT)
    try:
        assert domstate(LXC, CT) == "paused"
        freezer = cgroup_file("freezer", domain_id(LXC, CT), "freezer.state")
        assert freezer.read_text().strip() == "FROZEN"
        assert_clean_error(vm("freeze", CT, check=None), 8, "already frozen")
        assert_clean_error(vm("attach", CT, "--", "true", check=None), 8, "frozen")
    finally:
        vm("unfreeze", CT)
    assert domstate(LXC, CT) == "running"
    assert_clean_error(vm("unfreeze", CT, check=None), 8, "not frozen")


def test_ps_lists_the_container_processes():
    init = container_init_pid(CT)
    rows = json.loads(vm("ps", CT, "-o", "json").stdout)
    assert {r["container"] for r in rows} == {CT}
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[init]["ns_pid"] == 1 and by_pid[init]["cmd"].startswith("init")
    assert any("sh" in r["cmd"] for r in rows if r["pid"] != init)
    everything = json.loads(vm("ps", "--all", "-o", "json").stdout)
    assert any(r["container"] == "-" and r["pid"] == 1 for r in everything)
    assert any(r["container"] == CT and r["pid"] == init for r in everything)
    assert re.search(rf"^{CT}\s+{init}\s", vm("ps").stdout, re.M)


def test_attach_passes_the_exit_code_and_joins_the_cgroups(monkeypatch):
    proc = vm("attach", CT, "--", "/bin/sh", "-c", "id -u; hostname; exit 7", check=7)
    assert proc.stdout.split() == ["0", "virtmix-busybox"]
    cg = vm("attach", CT, "--", "cat", "/proc/self/cgroup").stdout
    assert f"{CT}.libvirt-lxc" in cg
    # stdin reaches the command; the default command is a shell.
    assert vm("attach", CT, input="echo piped; exit 3\n", check=3).stdout == "piped\n"
    # host environment does not leak in
    monkeypatch.setenv("VMIXT_HOST_VAR", "leaked")
    env = vm("attach", CT, "--", "env").stdout
    assert "VMIXT_HOST_VAR" not in env and "PATH=/usr/local/sbin" in env
    # ... unless asked, before or after NAME (lxc-attach takes its options either way)
    for args in (["--keep-env", CT], [CT, "--keep-env"]):
        assert "VMIXT_HOST_VAR=leaked" in vm("attach", *args, "--", "env").stdout, args
    # words after NAME without -- are the command's, its options included
    assert vm("attach", CT, "echo", "--keep-env").stdout == "--keep-env\n"


def test_attach_in_an_idmap_container_runs_as_its_root(lxc_conn, busybox_tree_idmap,
                                                       domain_cleanup, tmp_path):
    name = PFX + "idmap"
    domain_cleanup(lxc_conn, name)
    virsh_define(tmp_path, busybox_lxc_xml(name, busybox_tree_idmap, idmap_base=100000))
    vm("start", name)
    wait_booted(name)
    proc = vm("attach", name, "--", "/bin/sh", "-c", "id -u; exit 4", check=4)
    assert proc.stdout.strip() == "0"
    rows = json.loads(vm("ps", name, "-o", "json").stdout)
    assert rows and all(r["uid"] >= 100000 for r in rows)


@pytest.mark.parametrize("verb", [
    ["info"], ["start"], ["stop"], ["freeze"], ["unfreeze"], ["console"],
    ["cgroup", "NAME", "cpu.shares"], ["cgroup", "NAME", "cpu.shares", "100"],
    ["attach", "NAME", "--", "true"], ["ps", "NAME"],
])
def test_every_verb_on_a_missing_name(verb):
    args = [a if a != "NAME" else PFX + "missing" for a in verb]
    if "NAME" not in verb:
        args.append(PFX + "missing")
    assert_clean_error(vm(*args, check=None), 6, f"no domain named '{PFX}missing'")


def test_stop_of_a_stopped_domain_says_it_is_already_stopped():
    proc = vm("stop", OFF, check=None)
    assert_clean_error(proc, 8, f"{OFF} is already stopped (shutoff)")
    assert "start it first" not in proc.stderr


@pytest.mark.parametrize("verb", [
    ["freeze"], ["console"], ["attach", "NAME", "--", "true"], ["ps", "NAME"],
])
def test_verbs_that_need_a_running_domain(verb):
    args = [a if a != "NAME" else OFF for a in verb]
    if "NAME" not in verb:
        args.append(OFF)
    assert_clean_error(vm(*args, check=None), 8, f"{OFF} is shutoff", "must be running")
    assert domstate(LXC, OFF) == "shut off"


def test_start_and_stop(lxc_conn, busybox_tree, domain_cleanup, tmp_path):
    name = PFX + "life"
    domain_cleanup(lxc_conn, name)
    virsh_define(tmp_path, busybox_lxc_xml(name, busybox_tree))
    assert vm("start", name).stdout.strip() == f"{name}: running"
    assert domstate(LXC, name) == "running"
    wait_booted(name)
    assert_clean_error(vm("start", name, check=None), 8, "already running")
    # Graceful: busybox init halts on SIGPWR, well within the timeout.
    out = vm("stop", name, "--timeout", "20").stdout
    assert re.match(rf"{name}: shut down after \d+\.\ds", out), out
    assert domstate(LXC, name) == "shut off"
    assert virsh(LXC, "domstate", "--reason", name).strip() == "shut off (shutdown)"
    vm("start", name)
    out = vm("stop", name, "--force").stdout
    assert f"{name}: destroyed" in out
    assert virsh(LXC, "domstate", "--reason", name).strip() == "shut off (destroyed)"
