"""Live tests of the test infrastructure: the real libvirtd runs busybox containers and guests."""

from __future__ import annotations

import time

import libvirt
import pytest
from support import (
    busybox_lxc_xml,
    cleanup_domains,
    container_init_pid,
    guest_qemu_xml,
    lxc_run,
    wait_for,
)

pytestmark = pytest.mark.live
PREFIX = "vmixt-infra-"


def _start_container(conn, name: str, xml: str) -> float:
    """Define (schema-validated) and start a container; return seconds until init's rc ran."""
    dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    t0 = time.monotonic()
    dom.create()
    wait_for(
        lambda: lxc_run(name, ["cat", "/run/virtmix-init-done"]).stdout.strip() == "up",
        timeout=15,
        what=f"busybox init of {name} to run /etc/init.d/rcS",
    )
    return time.monotonic() - t0


def test_daemon_answers_with_both_drivers(libvirtd, lxc_conn, qemu_conn):
    assert lxc_conn.getType() == "LXC"
    assert qemu_conn.getType() == "QEMU"
    assert libvirtd.version >= 9_000_000


def test_busybox_container_runs_commands(lxc_conn, busybox_tree, domain_cleanup):
    name = PREFIX + "bb-priv"
    domain_cleanup(lxc_conn, name)
    seconds = _start_container(lxc_conn, name, busybox_lxc_xml(name, busybox_tree))
    print(f"privileged busybox container: start -> init rc done in {seconds:.2f}s")

    proc = lxc_run(name, ["/bin/sh", "-c", "cat /proc/1/comm; hostname; ip -o link | wc -l"])
    assert proc.returncode == 0, proc.stderr
    comm, hostname, links = proc.stdout.split()
    assert (comm, hostname) == ("init", "virtmix-busybox")
    assert links == "1", "privnet container should see only lo"
    # The exit code of the command is passed on (virsh lxc-enter-namespace would say 1).
    assert lxc_run(name, ["/bin/sh", "-c", "exit 7"]).returncode == 7


def test_unprivileged_container_maps_root(lxc_conn, busybox_tree_idmap, domain_cleanup):
    name = PREFIX + "bb-idmap"
    domain_cleanup(lxc_conn, name)
    xml = busybox_lxc_xml(name, busybox_tree_idmap, idmap_base=100000)
    seconds = _start_container(lxc_conn, name, xml)
    print(f"idmap busybox container: start -> init rc done in {seconds:.2f}s")

    status = open(f"/proc/{container_init_pid(name)}/status").read()
    host_uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert host_uid == "100000", "container root must be host uid 100000"
    proc = lxc_run(name, ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; touch /root/w"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0", "100000", "65536"]
    assert (busybox_tree_idmap / "root" / "w").stat().st_uid == 100000


def test_cleanup_domains_removes_only_the_prefix(lxc_conn, busybox_tree, domain_cleanup):
    prefix = PREFIX + "cl-"
    keep = PREFIX + "keep-cl"
    domain_cleanup(lxc_conn, prefix)
    domain_cleanup(lxc_conn, keep)
    lxc_conn.defineXML(busybox_lxc_xml(prefix + "defined", busybox_tree))
    lxc_conn.createXML(busybox_lxc_xml(prefix + "transient", busybox_tree), 0)
    lxc_conn.createXML(busybox_lxc_xml(keep, busybox_tree), 0)

    removed = cleanup_domains(lxc_conn, prefix)

    assert sorted(removed) == [prefix + "defined", prefix + "transient"]
    names = {d.name() for d in lxc_conn.listAllDomains(0)}
    assert not {n for n in names if n.startswith(prefix)}
    assert keep in names


@pytest.mark.slow
def test_qemu_guest_prints_marker(qemu_conn, guest_kernel, domain_cleanup, tmp_path):
    name = PREFIX + "guest"
    domain_cleanup(qemu_conn, name)
    log = tmp_path / "serial.log"
    xml = guest_qemu_xml(name, guest_kernel.vmlinuz, guest_kernel.initrd, log)
    dom = qemu_conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    t0 = time.monotonic()
    dom.create()
    line = wait_for(
        lambda: next(
            (
                ln
                for ln in log.read_text(errors="replace").splitlines()
                if ln.startswith(guest_kernel.MARKER)
            ),
            None,
        ),
        timeout=60,
        what=f"{guest_kernel.MARKER} on {name}'s serial log {log}",
        interval=0.2,
    )
    print(f"qemu guest: start -> marker in {time.monotonic() - t0:.2f}s ({line})")
    assert dom.isActive(), "without virtmix.poweroff the guest keeps running"


@pytest.mark.slow
def test_qemu_guest_poweroff_ends_domain(qemu_conn, guest_kernel, domain_cleanup, tmp_path):
    name = PREFIX + "guest-off"
    domain_cleanup(qemu_conn, name)
    log = tmp_path / "serial.log"
    xml = guest_qemu_xml(
        name,
        guest_kernel.vmlinuz,
        guest_kernel.initrd,
        log,
        cmdline_extra=guest_kernel.POWEROFF_ARG,
    )
    dom = qemu_conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    dom.create()
    wait_for(lambda: not dom.isActive(), timeout=60, what=f"{name} to power off", interval=0.2)
    state, reason = dom.state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    assert guest_kernel.MARKER in log.read_text(errors="replace")
