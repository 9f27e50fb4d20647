"""A QEMU guest (type='qemu', direct kernel boot) through apply, plan and destroy."""

from __future__ import annotations

import pytest
from apply_helpers import (
    PFX,
    make_storage_dir,
    names_with_prefix,
    remove_storage_dir,
    virtmix,
    write_inventory,
)
from support import GuestKernel, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]


@pytest.fixture
def storage(qemu_conn, domain_cleanup):
    domain_cleanup(qemu_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_guest_boots_through_apply(qemu_conn, storage, guest_kernel):
    name = PFX + "guest"
    guest = {"memory": "256MiB", "disks": [{"size": "64MiB"}],
             "boot": {"kernel": str(guest_kernel.vmlinuz), "initrd": str(guest_kernel.initrd),
                      "cmdline": "console=ttyS0 panic=-1"}}
    inv = str(write_inventory(storage, {"h1": {
        "uri": "qemu:///system", "lxc_uri": "lxc:///system", "virt_type": "qemu",
        "guests": {name: guest}}}))
    res = virtmix("plan", inv, check=10)
    assert f"+ guest {name} on h1 (qemu:///system): create" in res.stdout
    virtmix("apply", inv, "--yes", check=0)

    gdir = storage / "guests" / name
    disk = gdir / "disk0.qcow2"
    assert disk.read_bytes()[:4] == b"QFI\xfb"  # qemu-img made the qcow2 image
    dom = qemu_conn.lookupByName(name)
    assert dom.isActive() and "<domain type='qemu'" in dom.XMLDesc(0)
    log = gdir / "serial.log"
    wait_for(lambda: log.is_file() and GuestKernel.MARKER in log.read_text(errors="replace"),
             timeout=60, what=f"{GuestKernel.MARKER} in {log}", interval=0.2)

    # libvirt expanded the machine type, added devices...: the models still agree.
    res = virtmix("plan", inv, check=0)
    assert "nothing to do (1 up to date)" in res.stdout
    virtmix("apply", inv, "--yes", check=0)
    assert dom.ID() == qemu_conn.lookupByName(name).ID()  # not restarted

    # The test initrd cannot hear ACPI (the kernel's button driver is a module it does not
    # load): destroy asks, waits --timeout, then forces it off; 2 s instead of 30 say as much.
    res = virtmix("destroy", inv, "--yes", "--delete-rootfs", "--timeout", "2", check=0)
    assert f"{name}: removed, deleted {gdir}" in res.stdout
    assert "(forced off after 2s)" in res.stdout
    assert names_with_prefix(qemu_conn) == [] and not disk.exists()
