"""Daily use against the real libvirtd: ownership per site, ls columns, messages."""

from __future__ import annotations

import shutil

import pytest
import yaml
from apply_helpers import busybox, lxc_host, make_storage_dir, remove_storage_dir, virtmix

pytestmark = pytest.mark.live

PFX = "vmixt-daily-"


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)  # domains and networks named vmixt-daily-*
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def site_file(storage, file: str, site: str, containers: dict, networks: dict):
    doc = {"site": site, "settings": {"storage_dir": str(storage)}, "networks": networks,
           "hosts": {"local": lxc_host(containers)}}
    path = storage / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_two_sites_on_host_local_own_only_what_they_made(lxc_conn, storage, busybox_tree):
    a_net, b_net = PFX + "anet", PFX + "bnet"
    a = site_file(storage, "a.yaml", PFX + "a", {PFX + "a1": busybox(
        busybox_tree, interfaces=[{"network": a_net, "ipv4": "10.231.81.10/24"}])},
        {a_net: {"host": "local", "bridge": "vmixdaya0", "ipv4": "10.231.81.1/24"}})
    b = site_file(storage, "b.yaml", PFX + "b", {PFX + "b1": busybox(busybox_tree)},
                  {b_net: {"host": "local", "bridge": "vmixdayb0", "ipv4": "10.231.82.1/24"}})
    virtmix("apply", str(a), "--yes", check=0)
    virtmix("apply", str(b), "--yes", check=0)
    for mine, theirs in ((a, (b_net, PFX + "b1")), (b, (a_net, PFX + "a1"))):
        res = virtmix("plan", str(mine), "--prune", check=0)
        for name in theirs:
            assert name not in res.stdout, res.stdout
    # apply --prune of b changes nothing of a's.
    virtmix("apply", str(b), "--yes", "--prune", check=0)
    assert a_net in [n.name() for n in lxc_conn.listAllNetworks(0)]
    assert lxc_conn.lookupByName(PFX + "a1").isActive()

    # Moving the inventory file changes nothing it owns.
    moved = storage / "moved"
    moved.mkdir()
    shutil.move(a, moved / "a.yaml")
    virtmix("plan", str(moved / "a.yaml"), check=0)

    # import keeps the host name and the site; the network stays virtmix's.
    out = storage / "imported.yaml"
    proc = virtmix("import", "-c", "lxc:///system", "--name", PFX + "a1", "-o", str(out),
                   check=0)
    assert "site None" not in proc.stderr and f"site '{PFX}a'" in proc.stderr, proc.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["site"] == PFX + "a" and list(doc["hosts"]) == ["local"]
    assert doc["networks"][a_net]["host"] == "local"
    doc["settings"] = {"storage_dir": str(storage)}
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = virtmix("plan", str(out))
    assert res.returncode in (0, 10), res.stdout + res.stderr
    assert "not defined by virtmix" not in res.stdout + res.stderr
    virtmix("destroy", str(moved / "a.yaml"), "--yes", check=0)
    virtmix("destroy", str(b), "--yes", check=0)
    assert not [n for n in lxc_conn.listAllNetworks(0) if n.name().startswith(PFX)]


def test_ctrl_c_during_a_rootfs_build_says_so_and_twice_stops_clean(lxc_conn, storage):
    """Ctrl-C as a terminal sends it (to virtmix's whole process group) while apply builds
    a Debian tree: the first says what it waits for, the second kills the build, removes
    the partial tree and exits 130; nothing is defined."""
    import os
    import signal
    import subprocess
    import time

    from apply_helpers import virtmix_argv

    name = PFX + "deb"
    inv = site_file(storage, "deb.yaml", PFX + "deb", {name: {"profile": "debian"}}, {})
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    proc = subprocess.Popen(virtmix_argv("apply", str(inv), "--yes", "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    cache = storage / "cache"
    try:
        deadline = time.monotonic() + 60
        while not list(cache.glob(".build-*/tree")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert list(cache.glob(".build-*/tree")), "the build did not start"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.5)
        assert proc.poll() is None, "the first Ctrl-C must wait for the build"
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert (f"stopping: waiting for the rootfs build (mmdebstrap bookworm) of {name} to "
            "finish; Ctrl-C again to stop now") in err, err
    assert "stopping now: killed rootfs build" in err, err
    assert not list(cache.glob(".build-*")), "the partial tree was left behind"
    assert name not in [d.name() for d in lxc_conn.listAllDomains(0)]
    assert not (storage / "containers" / name).exists()


def _vm_env(*args: str, env: dict | None = None):
    import os
    import subprocess

    from apply_helpers import REPO, virtmix_argv

    full = {k: v for k, v in os.environ.items() if k not in ("LIBVIRT_DEFAULT_URI",
                                                             "VIRTMIX_INVENTORY")}
    return subprocess.run(virtmix_argv(*args), capture_output=True, text=True, timeout=120,
                          env={**full, **(env or {})}, cwd=REPO)


def test_ls_addresses_memory_site_cgroup_listing_and_messages(lxc_conn, storage, busybox_tree):
    import json

    from support import lxc_run, wait_for

    name, net = PFX + "ls1", PFX + "lsnet"
    inv = site_file(storage, "ls.yaml", PFX + "lssite", {name: busybox(
        busybox_tree, memory="64MiB", memtune={"hard_limit": "48MiB"},
        interfaces=[{"network": net, "ipv4": "10.231.84.10/24"}])},
        {net: {"host": "local", "bridge": "vmixdayl0", "ipv4": "10.231.84.1/24"}})
    virtmix("apply", str(inv), "--yes", check=0)
    wait_for(lambda: lxc_run(name, ["cat", "/run/virtmix-init-done"]).stdout.strip() == "up",
             timeout=15, what=f"busybox init of {name}")
    # An address added inside the container, in no configuration: ls must read it live.
    assert lxc_run(name, ["ip", "addr", "add", "10.231.84.77/24", "dev", "eth0"]).returncode == 0

    rows = {r["name"]: r for r in json.loads(virtmix("ls", "-o", "json", check=0).stdout)}
    row = rows[name]
    assert set(row["ipv4"]) == {"10.231.84.10", "10.231.84.77"}, row
    assert row["memory"] == "48MiB" and row["memory_kib"] == 48 * 1024  # the hard limit
    assert row["site"] == PFX + "lssite"
    table = virtmix("ls", check=0).stdout
    header = table.splitlines()[0].split()
    assert {"IPV4", "MEMORY", "SITE"} <= set(header)
    line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
    assert "10.231.84.10" in line and "48MiB" in line and PFX + "lssite" in line

    # cgroup NAME lists every key; --quiet after the key is not a value.
    listing = virtmix("cgroup", name, check=0).stdout
    assert "memory.limit_in_bytes" in listing and str(48 * 1024 * 1024) in listing
    assert "cpu.shares" in listing and "cpuset.cpus" in listing and "blkio.weight" in listing
    data = json.loads(virtmix("cgroup", name, "-o", "json", check=0).stdout)
    assert {d["key"] for d in data} >= {"cpu.shares", "memory.max", "cpuset.cpus"}
    res = virtmix("cgroup", name, "cpu.shares", "--quiet", check=0)
    assert res.stdout.split()[0] == "1024", res.stdout  # the value, not "set to --quiet"

    # $LIBVIRT_DEFAULT_URI=qemu:///system hides no container.
    res = _vm_env("ls", env={"LIBVIRT_DEFAULT_URI": "qemu:///system"})
    assert res.returncode == 0 and name in res.stdout, res.stdout + res.stderr
    res = _vm_env("info", name, env={"LIBVIRT_DEFAULT_URI": "qemu:///system"})
    assert res.returncode == 0 and "state:" in res.stdout, res.stderr

    # Messages.
    res = virtmix("info", name + "x")
    assert res.returncode == 6 and f"did you mean '{name}'?" in res.stderr, res.stderr
    virtmix("stop", name, "--force", check=0)
    res = virtmix("stop", name)
    assert res.returncode == 8 and "already stopped" in res.stderr, res.stderr
    assert "start it first" not in res.stderr
    virtmix("destroy", str(inv), "--yes", check=0)


def test_debian_profile_containers_have_ps_and_ip(lxc_conn, domain_cleanup):
    """A container of the shipped debian profile has procps and iproute2 (shared cache of
    the create tests: the profile's base is the same as `create --template debian`'s)."""
    import os
    from pathlib import Path

    from support import lxc_run, wait_for

    shared = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs"))
    storage = shared / "shared"
    storage.mkdir(parents=True, exist_ok=True)
    name = PFX + "debps"
    domain_cleanup(lxc_conn, name)
    inv = Path(make_storage_dir()) / "deb.yaml"
    inv.write_text(yaml.safe_dump({"site": PFX + "debps", "settings": {"storage_dir":
                                   str(storage)}, "hosts": {"local": lxc_host(
                                       {name: {"profile": "debian"}})}}))
    try:
        virtmix("apply", str(inv), "--yes", timeout=900, check=0)
        wait_for(lambda: lxc_run(name, ["systemctl", "is-system-running"]).stdout.strip()
                 in ("running", "degraded"), 90, f"systemd in {name}")
        ps = lxc_run(name, ["ps", "-e", "-o", "comm="])
        assert ps.returncode == 0 and "systemd" in ps.stdout, ps.stderr
        ip = lxc_run(name, ["ip", "-o", "link", "show", "lo"])
        assert ip.returncode == 0 and "lo" in ip.stdout, ip.stderr
    finally:
        virtmix("destroy", str(inv), "--yes", "--delete-rootfs")
        remove_storage_dir(inv.parent)
    assert not (storage / "containers" / name).exists()
