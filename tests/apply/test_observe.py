"""observe: libvirt XML -> owned fields (units, defaults libvirt adds), URIs, cgroup files."""

from __future__ import annotations

import pytest

from virtmix.converge.observe import network_fields, owned_fields
from virtmix.converge.plan_xml import adapt_domain_xml, xml_diff
from virtmix.hosts import is_local as is_local_uri
from virtmix.hosts.cgroupfs import write_cpuset_cgroup

LXC = """<domain type='lxc'><name>x</name>
  <memory unit='{unit}'>{mem}</memory>
  <memtune><hard_limit unit='M'>128</hard_limit></memtune>
  <vcpu placement='static' cpuset='{cpuset}'>1</vcpu>
  <cputune><shares>512</shares></cputune>
  <os><type arch='x86_64'>exe</type><init>/sbin/init</init><initarg>-v</initarg></os>
  <devices><emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
  <filesystem type='mount'><source dir='/t'/><target dir='/'/></filesystem>
  <interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='n'/>
   <target dev='vnet3'/><guest dev='eth0'/><alias name='net0'/></interface>
  <console type='pty' tty='/dev/pts/3'><target type='lxc' port='0'/></console></devices>
</domain>"""


@pytest.mark.parametrize(("unit", "mem"), [("KiB", 65536), ("MiB", 64), ("M", 64),
                                           ("b", 67108864), ("bytes", 67108864)])
def test_memory_units_fold_to_kib(unit, mem):
    fields = owned_fields(LXC.format(unit=unit, mem=mem, cpuset="0-1"))
    assert fields["memory_kib"] == 65536 and fields["memtune.hard_limit"] == 131072


def test_libvirt_additions_are_not_owned():
    fields = owned_fields(LXC.format(unit="KiB", mem=65536, cpuset="1,0"))
    assert fields["vcpu_cpuset"] == "0-1"  # canonical form
    assert fields["interfaces"] == (("network", "n", "52:54:00:aa:bb:cc", "eth0", None, None),)
    assert fields["os.initargs"] == ("-v",) and fields["cputune.shares"] == 512
    assert "os.arch" not in fields  # the LXC driver adds the host's


def test_adapt_keeps_uuid_and_mac_and_diff_hides_runtime_parts():
    live = LXC.format(unit="KiB", mem=65536, cpuset="0")
    rendered = live.replace("52:54:00:AA:BB:CC", "52:54:00:01:02:03").replace(
        "<vcpu placement='static' cpuset='0'>", "<vcpu placement='static' cpuset='1'>")
    adapted = adapt_domain_xml(rendered, "u-u-i-d", owned_fields(live)["interfaces"], set())
    assert "<uuid>u-u-i-d</uuid>" in adapted and "52:54:00:aa:bb:cc" in adapted
    diff = xml_diff(live, adapted, "x")
    assert "cpuset=\"1\"" in diff and "vnet3" not in diff and "emulator" not in diff
    assert xml_diff(live, live, "x") == ""


def test_network_fields():
    xml = """<network><name>n</name><uuid>1</uuid><mac address='52:54:00:00:00:01'/>
      <bridge name='br' stp='on' delay='0'/>
      <dns><host ip='10.0.0.6'><hostname>b</hostname><hostname>a2</hostname></host></dns>
      <ip address='10.0.0.1' netmask='255.255.255.0'>
      <dhcp><range start='10.0.0.100' end='10.0.0.254'/>
      <host mac='52:54:00:AA:00:01' name='a' ip='10.0.0.5'/></dhcp></ip></network>"""
    assert network_fields(xml) == {
        "mode": "isolated", "bridge": "br", "ipv4": ("10.0.0.1", "255.255.255.0"),
        "dhcp": ("10.0.0.100", "10.0.0.254"),
        "dhcp_hosts": (("52:54:00:aa:00:01", "a", "10.0.0.5"),),
        "dns_hosts": (("10.0.0.6", ("a2", "b")),)}


@pytest.mark.parametrize(("uri", "local"), [
    ("lxc:///system", True), ("qemu:///system", True), ("test:///default", True),
    # ssh is never local, even to loopback: a forwarded port can lead into a guest (issue 12)
    ("lxc+ssh://root@127.0.0.1/system", False),
    ("lxc+ssh://root@127.0.0.1:2222/system?x=1", False),
    ("qemu+ssh://root@hv2.example/system", False), ("lxc+ssh://10.0.0.5/system", False),
    ("qemu+unix:///system", True)])
def test_is_local_uri(uri, local):
    assert is_local_uri(uri) is local


def test_cpuset_cgroup_with_children_is_rewritten_in_a_valid_order(tmp_path):
    group = tmp_path / "machine"
    child = group / "child"
    child.mkdir(parents=True)
    (group / "cpuset.cpus").write_text("0\n")
    (child / "cpuset.cpus").write_text("0\n")
    write_cpuset_cgroup(group / "cpuset.cpus", "1")
    assert (group / "cpuset.cpus").read_text() == "1\n"
    assert (child / "cpuset.cpus").read_text() == "1\n"


def test_idmap_element_order_is_not_a_change():
    """libvirt may store <gid> before <uid>: the plan's diff compares canonical forms."""
    base = LXC.format(unit="KiB", mem=65536, cpuset="0").replace("<devices>", "{idmap}<devices>")
    uid = "<uid start='0' target='100000' count='65536'/>"
    gid = "<gid start='0' target='100000' count='65536'/>"
    a = base.format(idmap=f"<idmap>{uid}{gid}</idmap>")
    b = base.format(idmap=f"<idmap>{gid}{uid}</idmap>")
    assert xml_diff(a, b, "x") == ""
    assert owned_fields(a)["idmap"] == owned_fields(b)["idmap"] == (0, 100000, 65536, 100000)
    c = base.format(idmap=f"<idmap>{gid}{uid.replace('100000', '200000')}</idmap>")
    assert "200000" in xml_diff(a, c, "x")
