"""virsh interop and `virtmix import`: a virsh-defined domain and a classic LXC container
become inventory entries that plan/apply then leave unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from admin_helpers import (
    LXC,
    PFX,
    cgroup_file,
    domain_id,
    domstate,
    inactive_xml,
    virsh,
    vm,
)
from support import busybox_lxc_xml, container_init_pid, lxc_run, wait_for

from virtmix.inventory.load import load_site

IMP = PFX + "imp-"


def wait_booted(name: str) -> None:
    wait_for(lambda: lxc_run(name, ["test", "-e", "/run/virtmix-init-done"]).returncode == 0,
             10, f"busybox init of {name}")


def with_storage(path: Path, storage: Path, site: str) -> None:
    """Give an imported inventory a site name and a private storage dir (test hygiene);
    the entries stay exactly as import wrote them."""
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({"name": site, "settings": {"storage_dir": str(storage)},
                                    **doc}, sort_keys=False))


def plan_changes(inventory: Path, *extra: str) -> dict[str, list[str]]:
    proc = vm("plan", str(inventory), "-o", "json", *extra, check=None)
    assert proc.returncode in (0, 10), proc.stderr
    return {i["name"]: [c["field"] for c in i["changes"]] + i["ops"]
            for i in json.loads(proc.stdout)["items"]}


def test_virtmix_defined_domains_are_ordinary_libvirt_domains(lxc_conn, busybox_tree,
                                                                domain_cleanup, tmp_path):
    """What virtmix defines, virsh lists, starts, stops and edits; virtmix sees the edit."""
    name = IMP + "managed"
    domain_cleanup(lxc_conn, name)
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump({
        "name": "vmixt-admin-site", "settings": {"storage_dir": str(tmp_path / "s")},
        "hosts": {"local": {"uri": "qemu:///system", "lxc_uri": LXC, "virt_type": "qemu",
                            "containers": {name: {"rootfs": {"path": str(busybox_tree)},
                                                  "memory": "64MiB", "state": "stopped"}}}}}))
    vm("apply", str(inv), "--yes")
    assert name in virsh(LXC, "list", "--all", "--name").split()
    virsh(LXC, "start", name)
    assert domstate(LXC, name) == "running"
    row = next(r for r in json.loads(vm("ls", "-o", "json").stdout) if r["name"] == name)
    assert row["managed"] == "managed" and row["state"] == "running"
    virsh(LXC, "destroy", name)
    # virsh edit through a scripted editor: 64 MiB -> 96 MiB
    env = dict(os.environ, EDITOR="sed -i s/65536/98304/g")
    subprocess.run(["virsh", "-c", LXC, "edit", name], check=True, env=env,
                   capture_output=True, timeout=30)
    row = next(r for r in json.loads(vm("ls", "-o", "json").stdout) if r["name"] == name)
    assert row["memory_kib"] == 98304 and row["state"] == "shutoff"


def test_import_of_a_virsh_defined_container(lxc_conn, busybox_tree, domain_cleanup,
                                             tmp_path):
    name = IMP + "virsh"
    domain_cleanup(lxc_conn, name)
    xml = busybox_lxc_xml(name, busybox_tree).replace(
        "<vcpu>1</vcpu>",
        "<vcpu cpuset='0'>1</vcpu><cputune><shares>512</shares></cputune>"
        "<memtune><hard_limit unit='KiB'>98304</hard_limit></memtune>"
        "<blkiotune><weight>300</weight></blkiotune>")
    (tmp_path / "d.xml").write_text(xml)
    virsh(LXC, "define", str(tmp_path / "d.xml"))
    virsh(LXC, "start", name)
    wait_booted(name)
    uuid, pid = virsh(LXC, "domuuid", name).strip(), container_init_pid(name)
    assert next(r for r in json.loads(vm("ls", "-o", "json").stdout)
                if r["name"] == name)["managed"] == "foreign"

    inv = tmp_path / "imported.yaml"
    proc = vm("import", "-c", LXC, "--name", name, "-o", str(inv))
    assert "would still change" not in proc.stderr, proc.stderr
    entry = load_site(inv).find(name).spec
    assert (entry.cpu.cpuset, entry.cpu.shares, entry.memtune.hard_limit,
            entry.blkio.weight, entry.memory) == ("0", 512, 98304, 300, 65536)
    assert entry.rootfs.path == str(busybox_tree) and entry.state == "running"

    with_storage(inv, tmp_path / "storage", "vmixt-admin-imported")
    # Without --adopt plan refuses the foreign domain; with it only metadata changes.
    assert vm("plan", str(inv), check=None).returncode == 9
    assert plan_changes(inv, "--adopt") == {name: ["metadata", "redefine"]}
    vm("apply", str(inv), "--adopt", "--yes")
    assert plan_changes(inv) == {name: []}
    # Adopted in place: same UUID, same running init (no restart), same limits.
    assert virsh(LXC, "domuuid", name).strip() == uuid
    assert container_init_pid(name) == pid
    assert cgroup_file("cpu", domain_id(LXC, name), "cpu.shares").read_text().strip() == "512"
    assert "<shares>512</shares>" in inactive_xml(LXC, name)
    assert next(r for r in json.loads(vm("ls", "-o", "json").stdout)
                if r["name"] == name)["managed"] == "managed"


@pytest.fixture
def classic(lxc_conn, domain_cleanup):
    """A classic LXC container made with Debian's lxc tools (lxc-create -t busybox)."""
    name = IMP + "classic"
    domain_cleanup(lxc_conn, name)
    subprocess.run(["lxc-destroy", "-n", name, "-f"], capture_output=True, check=False)
    proc = subprocess.run(["lxc-create", "-n", name, "-t", "busybox"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    config = Path("/var/lib/lxc") / name / "config"
    # No lxcbr0 here (lxc-net is not running): give it a network namespace of its own,
    # and some limits to carry over.
    text = config.read_text().replace("lxc.net.0.type = veth", "lxc.net.0.type = empty")
    config.write_text(text + "lxc.cgroup.cpu.shares = 768\nlxc.cgroup.cpuset.cpus = 0\n"
                             "lxc.cgroup.memory.limit_in_bytes = 64M\n")
    yield name, config
    # The container ran under libvirt: destroy that domain before the tree goes.
    domain_cleanup(lxc_conn, name)
    subprocess.run(["lxc-destroy", "-n", name, "-f"], capture_output=True, check=False)
    shutil.rmtree(config.parent, ignore_errors=True)


def test_import_of_a_classic_lxc_container(classic, tmp_path):
    name, config = classic
    before = config.read_text()
    inv = tmp_path / "classic.yaml"
    proc = vm("import", "-c", LXC, "--lxc-path", "/var/lib/lxc", "--name", name,
              "-o", str(inv))
    assert f"{name}: state: stopped" in proc.stderr  # the notes are shown
    spec = load_site(inv).find(name).spec
    assert spec.rootfs.path == str(config.parent / "rootfs")
    assert (spec.cpu.shares, spec.cpu.cpuset, spec.memtune.hard_limit) == (768, "0", 65536)
    assert spec.privileged and spec.interfaces == []
    # The classic container is not running: let apply start it under libvirt.
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["localhost"]["containers"][name]["state"] = "running"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    with_storage(inv, tmp_path / "storage", "vmixt-admin-classic")
    vm("apply", str(inv), "--yes")
    assert domstate(LXC, name) == "running"
    assert plan_changes(inv) == {name: []}
    did = domain_id(LXC, name)
    assert cgroup_file("cpu", did, "cpu.shares").read_text().strip() == "768"
    assert cgroup_file("cpuset", did, "cpuset.cpus").read_text().strip() == "0"
    assert vm("attach", name, "--", "/bin/sh", "-c", "hostname; exit 5", check=5).stdout
    assert config.read_text() == before  # the classic config is left as it was
