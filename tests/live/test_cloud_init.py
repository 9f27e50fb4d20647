"""cloud-init for real: a guest on a given image (downloaded from a file:// URL with its
checksum) configured from the NoCloud seed ISO, and a built container tree with cloud-init.

The image is the project's guest image plus the `cloud-init` package (these machines have
no internet; packages come through the host's apt sources), cached in the nesting tests'
storage. It boots under TCG with direct kernel boot; the test then logs in with its own key
(from `ssh_keys`) over an isolated test network, through virtmix's ssh config, which trusts
only the host key virtmix made, pinned and handed to cloud-init.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from apply_helpers import virtmix
from support import cleanup_domains, lxc_run, wait_for

from virtmix.images.build import ensure_image
from virtmix.images.spec import ImageSpec
from virtmix.rootfs.storage import Storage

pytestmark = [pytest.mark.live, pytest.mark.slow]

PFX = "vmixt-ci-"
IMAGE_STORAGE = Path("/var/tmp/vmixt-nest-storage")  # the nesting tests' image cache
GUEST, ADDR = f"{PFX}g", "10.213.91.20"


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


def test_guest_on_a_cloud_image_takes_hostname_key_and_address(work):
    image = ensure_image(ImageSpec(packages=("cloud-init",)), Storage(IMAGE_STORAGE))
    key = (work / "key.pub").read_text().strip()
    doc = {"name": "vmixt-ci-site", "settings": {"storage_dir": str(work / "st")},
           "networks": {f"{PFX}net": {"host": "hv1", "bridge": "vmixtci0",
                                      "ipv4": "10.213.91.1/24"}},
           "hosts": {"hv1": {"virt_type": "qemu", "guests": {GUEST: {
               "memory": "768MiB", "ssh_keys": [key],
               "image": {"url": image.base.as_uri(),
                         "checksum": f"sha256:{sha256(image.base)}"},
               "boot": {"kernel": str(image.kernel), "initrd": str(image.initrd),
                        "cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0"},
               "interfaces": [{"network": f"{PFX}net", "ipv4": f"{ADDR}/24"}],
               "cloud_init": {"user_data": {"runcmd": [["touch", "/run/vmixt-user-data"]]}},
           }}}}}
    inv = work / "site.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    virtmix("apply", str(inv), "--yes", check=0, timeout=900)
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
    # The export reaches it with ssh and the pinned key (virtmix's own key is in the seed).
    exported = yaml.safe_load(virtmix("inventory", "ansible", str(inv), check=0).stdout)
    gvars = exported["all"]["children"]["virtmix_guests"]["hosts"][GUEST]
    assert gvars["ansible_connection"] == "ssh" and gvars["ansible_host"] == ADDR
    res = subprocess.run(["ssh", "-F", str(conf), f"root@{ADDR}", "id -u"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "0", res.stderr
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
