"""`virtmix inventory ansible` + the real ansible-playbook against real built containers.

One unprivileged (the default: idmapped, user namespace) and one privileged Debian
container on an isolated network; the shipped playbook writes under /root, templates,
installs a package with apt, adds a user, starts a systemd unit and checks `id -u` is 0.
A second run changes nothing. Ad-hoc commands check the cgroups the plugin joins and that
the virtmix.site.inventory plugin gives the same hosts. The storage is the rootfs tests'
shared one, so the Debian base is built once per machine.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from ansible_helpers import PLAYBOOK, local_repo, recap, run
from apply_helpers import virtmix
from support import cleanup_domains

from virtmix.errors import VirtmixError
from virtmix.rootfs import Storage, remove_container_tree

pytestmark = [pytest.mark.live, pytest.mark.slow]

PFX = "vmixt-ans-"
STORAGE = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs")) / "shared"
UNPRIV, PRIV = f"{PFX}u", f"{PFX}p"


def _clean(lxc_conn) -> None:
    cleanup_domains(lxc_conn, PFX)
    storage = Storage(STORAGE)
    for name in storage.container_names():
        if name.startswith(PFX):
            with contextlib.suppress(VirtmixError):
                remove_container_tree(storage, name)


@pytest.fixture(scope="module")
def site(lxc_conn):
    """Two applied containers, the exported inventory and the plugin's config file."""
    _clean(lxc_conn)
    work = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    work.chmod(0o755)
    local_repo(work / "repo", "hello")
    common = {"profile": "ansible", "memory": "256MiB"}
    doc = {"name": "vmixt-ans-site", "settings": {"storage_dir": str(STORAGE)},
           "networks": {f"{PFX}net": {"host": "hv1", "mode": "isolated", "bridge": "vmixtans0",
                                      "ipv4": "10.213.77.1/24"}},
           "hosts": {"hv1": {"uri": "qemu:///system", "lxc_uri": "lxc:///system",
                             "virt_type": "qemu", "containers": {
               UNPRIV: {**common, "interfaces": [{"network": f"{PFX}net",
                                                  "ipv4": "10.213.77.10/24"}]},
               PRIV: {**common, "privileged": True,
                      "interfaces": [{"network": f"{PFX}net", "ipv4": "10.213.77.11/24"}]},
           }}}}
    inv = work / "site.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        # The unprivileged one boots first, alone, and the privileged one after it has: on a
        # cgroup v1 host without systemd all containers share one name=systemd tree
        # (docs/rootfs.md). Started side by side, the privileged one's systemd could make
        # system.slice as real root right after libvirt handed the tree to the idmapped
        # root, whose journald then failed with 219/CGROUP (seen in CI).
        alone = {**doc, "hosts": {"hv1": {**doc["hosts"]["hv1"], "containers": {
            UNPRIV: doc["hosts"]["hv1"]["containers"][UNPRIV]}}}}
        inv.write_text(yaml.safe_dump(alone, sort_keys=False))
        virtmix("apply", str(inv), "--yes", "--wait", check=0, timeout=900)
        inv.write_text(yaml.safe_dump(doc, sort_keys=False))
        virtmix("apply", str(inv), "--yes", check=0, timeout=900)
        virtmix("inventory", "ansible", str(inv), "--out", str(work / "inv.yml"), check=0)
        (work / "site.virtmix.yml").write_text("plugin: virtmix.site.inventory\n"
                                               "inventory: site.yaml\n")
        yield work
    finally:
        # --force: a graceful stop of two systemd containers took 30 s (test_clean_stop.py
        # tests the graceful one)
        virtmix("destroy", str(inv), "--yes", "--delete-rootfs", "--force")
        _clean(lxc_conn)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def test_playbook_with_ordinary_modules_in_both_kinds(site):
    play = ("ansible-playbook", "-i", str(site / "inv.yml"), "-e", f"repo_dir={site / 'repo'}",
            str(PLAYBOOK))
    # One container after the other, the unprivileged one first, for the reason in the
    # fixture: the play's new unit gets its group in the shared tree from the idmapped root.
    counts = {}
    for name in (UNPRIV, PRIV):
        first = run(*play, "-l", name)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        counts.update(recap(first.stdout))
    for name in (UNPRIV, PRIV):
        assert counts[name]["failed"] == 0 and counts[name]["unreachable"] == 0
        assert counts[name]["changed"] >= 6, counts
    # Written by the container's root: the mapped root on the host for the idmapped one.
    for name, uid in ((UNPRIV, 100000), (PRIV, 0)):
        path = STORAGE / "containers" / name / "rootfs" / "root" / "hello.txt"
        assert path.read_text() == "from ansible\n"
        assert path.stat().st_uid == uid and oct(path.stat().st_mode & 0o777) == "0o600"
    again = run(*play)
    assert again.returncode == 0, again.stdout[-4000:]
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[-3000:]


def test_commands_run_in_the_containers_cgroups(site, lxc_conn):
    res = run("ansible", "-i", str(site / "inv.yml"), UNPRIV, "-m", "command",
              "-a", "cat /proc/self/cgroup")
    assert res.returncode == 0, res.stdout + res.stderr
    controller = lxc_conn.lookupByName(UNPRIV).ID()
    mine = Path(f"/proc/{controller}/cgroup").read_text().splitlines()
    memory = next(line.split(":", 2)[2] for line in mine if ":memory:" in line)
    assert f":memory:{memory}" in res.stdout, (memory, res.stdout)


def test_inventory_plugin_reads_the_virtmix_inventory(site):
    res = run("ansible", "-i", str(site / "site.virtmix.yml"), "kind_container", "-m", "command",
              "-a", "id -u")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("| CHANGED | rc=0 >>\n0") == 2, res.stdout


def test_the_script_for_nested_containers_enters_the_container(site):
    """What the plugin runs in a guest for a nested container, run here on the host: the
    init pid from libvirt's status file, then nsenter -a (uid 0 in the idmapped one)."""
    import subprocess

    from virtmix.handoff.enter import remote_script

    res = subprocess.run(["sh", "-c", remote_script(UNPRIV, "id -u; cat /etc/hostname")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.split() == ["0", UNPRIV], res
    res = subprocess.run(["sh", "-c", remote_script(f"{PFX}absent", "true")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 125 and "is not running there" in res.stderr
