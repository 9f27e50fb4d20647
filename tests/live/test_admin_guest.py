"""The admin verbs on a small QEMU guest (TCG) that virsh defined: ls, info, start, freeze,
cgroup, stop, and clear errors for the container-only verbs."""

from __future__ import annotations

import json
import re

import pytest
from admin_helpers import PFX, QEMU, assert_clean_error, domstate, inactive_xml, virsh, vm
from support import guest_qemu_xml, wait_for

GUEST = PFX + "guest"


@pytest.fixture(scope="module")
def guest(qemu_conn, guest_kernel, tmp_path_factory):
    from support import cleanup_domains

    cleanup_domains(qemu_conn, GUEST)
    tmp = tmp_path_factory.mktemp("admin-guest")
    log = tmp / "serial.log"
    (tmp / "g.xml").write_text(guest_qemu_xml(GUEST, guest_kernel.vmlinuz, guest_kernel.initrd,
                                              log).replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>"))
    virsh(QEMU, "define", str(tmp / "g.xml"))
    yield log
    cleanup_domains(qemu_conn, GUEST)


def test_guest_lifecycle_and_tuning(guest, guest_kernel):
    row = next(r for r in json.loads(vm("ls", "-o", "json").stdout) if r["name"] == GUEST)
    assert (row["kind"], row["state"], row["managed"], row["uri"]) == (
        "kvm", "shutoff", "foreign", QEMU)
    assert_clean_error(vm("freeze", GUEST, check=None), 8, "must be running")

    assert vm("start", GUEST).stdout.strip() == f"{GUEST}: running"
    assert domstate(QEMU, GUEST) == "running"
    wait_for(lambda: guest_kernel.MARKER in guest.read_text(errors="replace"), 60,
             "the guest's boot marker on its serial log")
    data = json.loads(vm("info", GUEST, "-o", "json").stdout)
    assert data["kind"] == "kvm" and data["virt_type"] == "qemu" and data["vcpus"] == 2
    assert data["cpu_time_s"] > 0

    vm("freeze", GUEST)
    assert domstate(QEMU, GUEST) == "paused"
    vm("unfreeze", GUEST)
    assert domstate(QEMU, GUEST) == "running"

    assert vm("cgroup", GUEST, "cpu.shares", "512").stdout.strip() == "512"
    assert re.search(r"cpu_shares\s*:\s*512", virsh(QEMU, "schedinfo", GUEST))
    assert "<shares>512</shares>" in inactive_xml(QEMU, GUEST)
    assert vm("cgroup", GUEST, "cpuset.cpus", "0").stdout.strip() == "0"
    pins = virsh(QEMU, "vcpupin", GUEST)
    assert re.findall(r"^\s*\d+\s+(\S+)\s*$", pins, re.M) == ["0", "0"]
    assert "cpuset='0'" in inactive_xml(QEMU, GUEST)
    assert vm("cgroup", GUEST, "memory.limit_in_bytes", "512M").stdout.strip() == \
        str(512 * 1024 * 1024)
    assert re.search(r"hard_limit\s*:\s*524288", virsh(QEMU, "memtune", GUEST))

    # Container-only verbs say so.
    assert_clean_error(vm("attach", GUEST, "--", "true", check=None), 2, "KVM guest")
    assert_clean_error(vm("ps", GUEST, check=None), 2, "KVM guest")

    # The busybox initrd ignores the ACPI button: --no-kill leaves it running (exit 8) ...
    assert_clean_error(vm("stop", GUEST, "--timeout", "1", "--no-kill", check=None), 8,
                       "did not stop within 1s")
    assert domstate(QEMU, GUEST) == "running"
    # ... and by default the timeout ends in destroy, as lxc-stop does.
    out = vm("stop", GUEST, "--timeout", "2").stdout
    assert f"{GUEST}: destroyed" in out
    assert domstate(QEMU, GUEST) == "shut off"

    # destroy by bare name finds the guest on qemu:///system as the other verbs do (no -c),
    # refuses it as foreign (virsh defined it), and removes it when told so.
    assert_clean_error(vm("destroy", GUEST, "--yes", check=None), 9, "not virtmix's")
    assert domstate(QEMU, GUEST) == "shut off"
    assert f"{GUEST}: removed" in vm("destroy", GUEST, "--yes", "--force-foreign").stdout
    assert virsh(QEMU, "dominfo", GUEST, check=False).strip() == ""
    assert_clean_error(vm("destroy", GUEST, "--yes", check=None), 6, "no domain named",
                       "lxc:///system or qemu:///system")
