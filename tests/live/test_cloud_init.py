"""cloud-init for real: a guest on a given image (downloaded from a file:// URL with its
checksum) configured from the NoCloud seed ISO, and a built container tree with cloud-init.

The image is the project's guest image plus `cloud-init` and `python3-apt` (these machines
have no internet; packages come through the host's apt sources), cached in the nesting
tests' storage. It boots under TCG with direct kernel boot; the test then logs in with its
own key (from `ssh_keys`) over an isolated test network, through virtmix's ssh config, which
trusts only the host key virtmix made, pinned and handed to cloud-init. The same guest is
then configured by the real ansible-playbook through `virtmix inventory ansible` (ssh with
the pinned key) and reached through the virtmix.site.inventory plugin; a busybox container
on the same network and the guest resolve each other by name in the network's DNS.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import libvirt
import pytest
import yaml
from ansible_helpers import PLAYBOOK, local_repo, recap, tool
from ansible_helpers import env as ansible_env
from ansible_helpers import run as ansible
from apply_helpers import busybox, virtmix
from support import cleanup_domains, lxc_run, wait_for

from virtmix.images.build import ensure_image
from virtmix.images.spec import ImageSpec
from virtmix.rootfs.storage import Storage

pytestmark = [pytest.mark.live, pytest.mark.slow]

PFX = "vmixt-ci-"
IMAGE_STORAGE = Path("/var/tmp/vmixt-nest-storage")  # the nesting tests' image cache
GUEST, ADDR = f"{PFX}g", "10.213.91.20"
GW = "10.213.91.1"
BOX, BOX_ADDR = f"{PFX}bb", "10.213.91.30"  # a busybox container beside the guest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def work(qemu_conn, lxc_conn):
    cleanup_domains(qemu_conn, PFX)
    cleanup_domains(lxc_conn, PFX)
    path = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    path.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path / "key")],
                   check=True)
    yield path
    cleanup_domains(qemu_conn, PFX)
    cleanup_domains(lxc_conn, PFX)
    shutil.rmtree(path, ignore_errors=True)


def test_guest_on_a_cloud_image_takes_hostname_key_and_address(work, busybox_tree, lxc_conn):
    image = ensure_image(ImageSpec(packages=("cloud-init", "python3-apt")),
                         Storage(IMAGE_STORAGE))
    key = (work / "key.pub").read_text().strip()
    net = f"{PFX}net"
    doc = {"name": "vmixt-ci-site", "settings": {"storage_dir": str(work / "st")},
           "networks": {net: {"host": "hv1", "bridge": "vmixtci0", "ipv4": f"{GW}/24"}},
           "hosts": {"hv1": {"virt_type": "qemu", "guests": {GUEST: {
               "memory": "768MiB", "ssh_keys": [key],
               "image": {"url": image.base.as_uri(),
                         "checksum": f"sha256:{sha256(image.base)}"},
               "boot": {"kernel": str(image.kernel), "initrd": str(image.initrd),
                        "cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0"},
               "interfaces": [{"network": net, "ipv4": f"{ADDR}/24"}],
               # user-data text: a second MIME part beside virtmix's own #cloud-config,
               # which still brings the hostname, the keys and the pinned host key
               "cloud_init": {"user_data": "#!/bin/sh\ntouch /run/vmixt-user-data\n"},
           }}, "containers": {BOX: busybox(busybox_tree, interfaces=[
               {"network": net, "ipv4": f"{BOX_ADDR}/24"}])}}}}
    inv = work / "site.yaml"
    # First the network and the container alone: the guest's name then reaches the running
    # network's dnsmasq live (virNetworkUpdate) when the guest is added.
    guests = doc["hosts"]["hv1"].pop("guests")
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    virtmix("apply", str(inv), "--yes", check=0, timeout=300)
    network = lxc_conn.networkLookupByName(net)
    ifindex = Path(f"/sys/class/net/{network.bridgeName()}/ifindex").read_text()
    doc["hosts"]["hv1"]["guests"] = guests
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    virtmix("apply", str(inv), "--yes", check=0, timeout=900)
    # not restarted: the same bridge device (a restart makes a new one)
    assert Path(f"/sys/class/net/{network.bridgeName()}/ifindex").read_text() == ifindex
    for flags in (0, libvirt.VIR_NETWORK_XML_INACTIVE):  # live and persistent
        assert f"<hostname>{GUEST}</hostname>" in network.XMLDesc(flags)
    downloads = list((work / "st/images/downloads").iterdir())
    assert [p.name for p in downloads] == [f"{sha256(image.base)}.qcow2"]

    conf = work / "st/ssh/config"
    ssh = ["ssh", "-F", str(conf), "-i", str(work / "key"), f"root@{ADDR}"]

    def run(cmd: str) -> str:
        res = subprocess.run([*ssh, cmd], capture_output=True, text=True, timeout=60)
        return res.stdout if res.returncode == 0 else ""

    # TCG: kernel, systemd and cloud-init's stages take a few minutes on a busy machine.
    wait_for(lambda: run("test -e /run/vmixt-user-data && echo ok").strip() == "ok", 600,
             f"ssh into {GUEST} after cloud-init's final stage", interval=5)
    assert run("hostname").strip() == GUEST
    assert key in run("cat /root/.ssh/authorized_keys")
    assert f"inet {ADDR}/24" in run("ip -4 addr show eth0")
    status = run("cloud-init status --long")
    assert "status: done" in status and "NoCloud" in run("cat /run/cloud-init/result.json"), status

    # Names: the guest and the container resolve each other in the network's dnsmasq.
    def resolves_in_guest(name: str) -> str:
        return run(f"busybox nslookup -type=a {name} {GW}")

    def resolves_in_box(name: str) -> str:
        res = lxc_run(BOX, ["nslookup", "-type=a", name, GW], timeout=10)
        return res.stdout if res.returncode == 0 else ""

    assert BOX_ADDR in wait_for(lambda: resolves_in_guest(BOX), 20, f"{GUEST} resolving {BOX}")
    assert ADDR in wait_for(lambda: resolves_in_box(GUEST), 20, f"{BOX} resolving {GUEST}")

    # Ansible: the export reaches the guest with ssh, virtmix's key and the pinned host key.
    out = work / "inv.yml"
    virtmix("inventory", "ansible", str(inv), "--out", str(out), check=0)
    gvars = yaml.safe_load(out.read_text())["all"]["children"]["virtmix_guests"]["hosts"][GUEST]
    assert gvars["ansible_connection"] == "ssh" and gvars["ansible_host"] == ADDR
    assert "StrictHostKeyChecking=yes" in gvars["ansible_ssh_common_args"]
    local_repo(work / "repo", "hello")
    play = ("ansible-playbook", "-i", str(out), "-e", f"repo_dir={work / 'repo'}",
            "-e", f"target={GUEST}", str(PLAYBOOK))
    first = ansible(*play, timeout=900)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    counts = recap(first.stdout)[GUEST]
    assert counts["failed"] == counts["unreachable"] == 0 and counts["changed"] >= 6, counts
    assert run("stat -c %u:%a /root/hello.txt; cat /root/hello.txt").split() == [
        "0:600", "from", "ansible"]
    assert run("id -u vmixt").strip() == "1500"
    assert run("systemctl is-active vmixt-hello").strip() == "active"
    # The inventory plugin reads site.yaml directly and gives the guest the same way.
    (work / "site.virtmix.yml").write_text("plugin: virtmix.site.inventory\n"
                                           "inventory: site.yaml\n")
    res = ansible("ansible", "-i", str(work / "site.virtmix.yml"), GUEST, "-m", "command",
                  "-a", "id -u")
    assert res.returncode == 0 and "| CHANGED | rc=0 >>\n0" in res.stdout, res.stdout
    # Only the pinned key is trusted, even with host key checking turned off in Ansible's
    # settings: another key pinned for the address makes the guest unreachable.
    known = work / "st/ssh/known_hosts"
    pins = known.read_text()
    known.write_text(pins.replace(pins.split(f"{ADDR} ")[1].split("\n")[0], key))
    try:
        res = subprocess.run([tool("ansible"), "-i", str(out), GUEST, "-m", "ping"],
                             capture_output=True, text=True, timeout=120,
                             env={**ansible_env(), "ANSIBLE_HOST_KEY_CHECKING": "False",
                                  # a new connection (the earlier runs' master is alive)
                                  "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp")})
        assert res.returncode != 0 and "UNREACHABLE" in res.stdout, res.stdout
        assert "Host key verification failed" in res.stdout + res.stderr, res.stdout
    finally:
        known.write_text(pins)

    # Destroying the guest takes its name out of the network's DNS (live and persistent)
    # and its pin out of known_hosts; the container stays and no longer resolves it.
    virtmix("destroy", GUEST, "--yes", "--force", check=0)
    for flags in (0, libvirt.VIR_NETWORK_XML_INACTIVE):
        xml = network.XMLDesc(flags)
        assert GUEST not in xml and BOX in xml, xml
    wait_for(lambda: ADDR not in resolves_in_box(GUEST), 20, f"{GUEST} gone from the DNS")
    assert ADDR not in known.read_text()
    virtmix("destroy", str(inv), "--yes", "--delete-rootfs", check=0)


ROOTFS_STORAGE = Path("/var/tmp/virtmix-test-rootfs/shared")  # the rootfs tests' base cache


def test_container_tree_with_cloud_init_reads_its_seed(work, lxc_conn):
    """The same user-data in a built (unprivileged) container with cloud-init in its tree."""
    key = (work / "key.pub").read_text().strip()
    name = f"{PFX}c"
    doc = {"name": "vmixt-ci-csite", "settings": {"storage_dir": str(ROOTFS_STORAGE)},
           "hosts": {"hv1": {"virt_type": "qemu", "containers": {name: {
               "profile": "debian", "memory": "384MiB", "ssh_keys": [key],
               "rootfs": {"packages": ["cloud-init"]},
               "cloud_init": {"user_data": {"runcmd": [["touch", "/run/vmixt-user-data"]]}},
           }}}}}
    inv = work / "csite.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        virtmix("apply", str(inv), "--yes", check=0, timeout=900)
        seed = ROOTFS_STORAGE / "containers" / name / "rootfs/var/lib/cloud/seed/nocloud"
        assert yaml.safe_load((seed / "meta-data").read_text())["local-hostname"] == name
        assert (seed / "user-data").stat().st_uid == 100000  # shifted with the tree
        wait_for(lambda: lxc_run(name, ["test", "-e", "/run/vmixt-user-data"]).returncode == 0,
                 180, f"cloud-init's runcmd in {name}", interval=2)
        assert lxc_run(name, ["hostname"]).stdout.strip() == name
        assert key in lxc_run(name, ["cat", "/root/.ssh/authorized_keys"]).stdout
        result = lxc_run(name, ["cat", "/run/cloud-init/result.json"]).stdout
        assert "NoCloud" in result, result
    finally:
        virtmix("destroy", str(inv), "--yes", "--delete-rootfs")
