"""Domain XML -> inventory entries; the round trip through the core's templates is checked."""

from __future__ import annotations

from virtmix.admin.importer import (
    _uri_pair,
    check_roundtrip,
    dump,
    from_domain,
    inventory_document,
)
from virtmix.domain.settings import parse_domain

LXC_XML = """<domain type='lxc'>
  <name>web</name>
  <uuid>0b4ab5c8-6b4c-4f63-9d0b-2b3f1c7d3f10</uuid>
  <description>from virsh</description>
  <memory unit='KiB'>131072</memory>
  <blkiotune><weight>300</weight></blkiotune>
  <memtune><hard_limit unit='KiB'>98304</hard_limit><soft_limit unit='M'>64</soft_limit>
  </memtune>
  <vcpu placement='static' cpuset='1'>1</vcpu>
  <cputune><shares>2048</shares><period>100000</period><quota>50000</quota></cputune>
  <os><type arch='x86_64'>exe</type><init>/bin/sh</init><initarg>-c</initarg>
    <initarg>sleep 1000</initarg></os>
  <features><privnet/></features>
  <devices>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/srv/web'/><target dir='/'/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/srv/data'/><target dir='/data'/><readonly/>
    </filesystem>
    <console type='pty'/>
  </devices>
</domain>"""

GUEST_XML = """<domain type='qemu'>
  <name>vm1</name>
  <uuid>4f0f5a53-3c2f-4c1c-8d1e-0c2a4b1f9e77</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/k/vmlinuz</kernel><initrd>/k/initrd.img</initrd>
    <cmdline>console=ttyS0</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/img/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/>
      <target dev='hdc' bus='ide'/></disk>
    <interface type='network'><mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>"""


def test_parse_domain_units_and_fields():
    s = parse_domain(LXC_XML)
    assert s.memory_kib == 131072 and s.memtune == {"hard_limit": 98304, "soft_limit": 65536}
    assert s.cputune == {"shares": 2048, "period": 100000, "quota": 50000}
    assert s.rootfs == "/srv/web" and s.init == ["/bin/sh", "-c", "sleep 1000"]
    assert s.blkio_weight == 300 and s.privnet and s.idmap is None


def test_container_entry():
    imp = from_domain(LXC_XML, state="running", autostart=True, v2=False)
    assert imp.kind == "container"
    assert imp.entry == {
        "memory": "128MiB", "cpu": {"cpuset": "1", "shares": 2048, "period": 100000,
                                    "quota": 50000},
        "memtune": {"hard_limit": "96MiB", "soft_limit": "64MiB"}, "blkio": {"weight": 300},
        "description": "from virsh", "rootfs": {"path": "/srv/web"},
        "init": ["/bin/sh", "-c", "sleep 1000"], "privileged": True,
        "mounts": [{"source": "/srv/data", "target": "/data", "readonly": True}],
        "state": "running", "autostart": True,
    }


def test_v2_weights_become_shares():
    imp = from_domain(LXC_XML.replace("<shares>2048", "<shares>200"), state="shutoff",
                      autostart=False, v2=True)
    assert imp.entry["cpu"]["shares"] == 2048 and imp.entry["state"] == "stopped"


def test_guest_entry():
    imp = from_domain(GUEST_XML, state="shutoff", autostart=False, v2=False)
    assert imp.kind == "guest"
    e = imp.entry
    assert e["virt_type"] == "qemu" and e["vcpus"] == 2 and e["memory"] == "256MiB"
    assert e["disks"] == [{"path": "/img/vm1.qcow2", "format": "qcow2"}]  # no cdrom
    assert e["boot"] == {"kernel": "/k/vmlinuz", "initrd": "/k/initrd.img",
                         "cmdline": "console=ttyS0"}
    assert e["interfaces"] == [{"network": "default", "mac": "52:54:00:aa:bb:cc",
                                "model": "virtio"}]


def test_roundtrip_of_a_container_changes_nothing_but_metadata():
    items = [from_domain(LXC_XML, state="running", autostart=False, v2=False)]
    text = dump(inventory_document("hv1", "qemu:///system", "lxc:///system", "v1", items),
                items, "lxc:///system")
    check_roundtrip(text, items)
    assert items[0].notes == []


def test_roundtrip_reports_what_the_inventory_cannot_hold():
    # A container sharing the host's network namespace: virtmix always adds <privnet/>.
    xml = LXC_XML.replace("<features><privnet/></features>", "")
    items = [from_domain(xml, state="running", autostart=False, v2=False)]
    text = dump(inventory_document("hv1", "qemu:///system", "lxc:///system", "v1", items),
                items, "lxc:///system")
    check_roundtrip(text, items)
    notes = " | ".join(items[0].notes)
    assert "host's network namespace" in notes
    assert "apply --adopt would still change privnet: False -> True" in notes


def test_uri_pair():
    assert _uri_pair("lxc:///system") == ("qemu:///system", "lxc:///system")
    assert _uri_pair("lxc+ssh://root@h1/system") == ("qemu+ssh://root@h1/system",
                                                     "lxc+ssh://root@h1/system")
    assert _uri_pair("qemu:///system") == ("qemu:///system", "lxc:///system")


def test_an_idmap_domain_keeps_its_range_through_import():
    """Was: privileged false with the range dropped (then rendered with 100000)."""
    xml = LXC_XML.replace("<os>", "<idmap><uid start='0' target='300000' count='65536'/>"
                                  "<gid start='0' target='400000' count='65536'/></idmap><os>")
    items = [from_domain(xml, state="running", autostart=False, v2=False)]
    assert items[0].entry["privileged"] is False
    assert items[0].entry["idmap"] == {"uid": 300000, "gid": 400000, "count": 65536}
    text = dump(inventory_document("hv1", "qemu:///system", "lxc:///system", "v1", items),
                items, "lxc:///system")
    check_roundtrip(text, items)
    assert not [n for n in items[0].notes if "idmap" in n], items[0].notes


def test_uri_pair_schemes_are_case_insensitive():
    assert _uri_pair("LXC+SSH://h/system") == ("qemu+SSH://h/system", "lxc+SSH://h/system")
