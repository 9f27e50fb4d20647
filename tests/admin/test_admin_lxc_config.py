"""Classic LXC configs (both key generations) -> inventory entries that the core loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from virtmix.admin.importer import Imported, dump, inventory_document
from virtmix.admin.lxc_config import classic_containers, config_to_entry, read_config
from virtmix.errors import NotFoundError
from virtmix.inventory.load import load_site

LXC3 = """\
# made by lxc-create
lxc.include = /usr/share/lxc/config/common.conf
lxc.uts.name = "web1"
lxc.rootfs.path = dir:/var/lib/lxc/web1/rootfs
lxc.net.0.type = veth
lxc.net.0.link = br0
lxc.net.0.flags = up
lxc.net.0.hwaddr = 00:16:3E:12:34:56
lxc.net.0.ipv4.address = 10.0.3.5/24
lxc.net.0.ipv4.gateway = 10.0.3.1
lxc.net.0.name = eth0
lxc.cgroup.cpu.shares = 512
lxc.cgroup.cpuset.cpus = 0-1
lxc.cgroup.memory.limit_in_bytes = 268435456
lxc.cgroup.devices.allow = c 1:3 rwm
lxc.cgroup.net_cls.classid = 0x100001
lxc.start.auto = 1
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.apparmor.profile = generated
lxc.mount.entry = /srv/data srv/data none bind,ro 0 0
lxc.mount.entry = shm dev/shm tmpfs defaults,create=dir 0 0
lxc.prlimit.nofile = 1024
"""

LXC2 = """\
lxc.utsname = old1
lxc.rootfs = /var/lib/lxc/old1/rootfs
lxc.network.type = veth
lxc.network.link = lxcbr0
lxc.network.type = veth
lxc.network.link = br1
lxc.network.ipv4 = 192.168.1.9/24
lxc.cgroup.cpu.shares = 2048
lxc.init_cmd = /bin/sh -c "sleep infinity"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name / "config"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_read_config_keeps_order_strips_quotes_and_comments(tmp_path):
    pairs = read_config(write(tmp_path, "web1", LXC3))
    assert ("lxc.uts.name", "web1") in pairs
    assert [k for k, _ in pairs].count("lxc.idmap") == 2


def test_lxc3_config(tmp_path):
    (tmp_path / "srv").mkdir()
    text = LXC3.replace("/srv/data", str(tmp_path / "srv"))
    ce = config_to_entry("web1", write(tmp_path, "web1", text))
    e = ce.entry
    assert "hostname" not in e  # same as the name
    assert e["rootfs"] == {"path": "/var/lib/lxc/web1/rootfs"}
    assert e["interfaces"] == [{"bridge": "br0", "name": "eth0", "mac": "00:16:3e:12:34:56",
                                "ipv4": "10.0.3.5/24", "gateway": "10.0.3.1"}]
    assert e["cgroup"] == {"cpu.shares": "512", "cpuset.cpus": "0-1",
                           "memory.limit_in_bytes": "268435456"}
    assert e["memory"] == "256MiB"
    assert e["privileged"] is False and e["autostart"] is True and e["state"] == "stopped"
    assert e["mounts"] == [{"source": str(tmp_path / "srv"), "target": "/srv/data",
                            "readonly": True}]
    notes = " ".join(ce.notes)
    for expected in ("net_cls.classid", "not a bind mount", "lxc.include",
                     "lxc.prlimit.nofile"):
        assert expected in notes
    assert "apparmor" not in notes and "devices.allow" not in notes


def test_lxc2_config_with_two_legacy_networks(tmp_path):
    ce = config_to_entry("old1", write(tmp_path, "old1", LXC2))
    e = ce.entry
    assert e["rootfs"] == {"path": "/var/lib/lxc/old1/rootfs"}
    assert e["interfaces"] == [{"bridge": "lxcbr0"},
                               {"bridge": "br1", "ipv4": "192.168.1.9/24"}]
    assert e["init"] == ["/bin/sh", "-c", "sleep infinity"]
    assert e["privileged"] is True
    assert e["cgroup"] == {"cpu.shares": "2048"}


@pytest.mark.parametrize("rootfs, note", [
    ("overlay:/a:/b", "only directory trees"),
    ("btrfs:/var/lib/lxc/x/rootfs", "only directory trees"),
])
def test_rootfs_backends_that_cannot_be_imported(tmp_path, rootfs, note):
    ce = config_to_entry("x", write(tmp_path, "x", f"lxc.rootfs.path = {rootfs}\n"))
    assert any(note in n for n in ce.notes)


def test_the_id_map_is_kept_as_the_entrys_idmap(tmp_path):
    """Was: a map other than 100000 was only noted (and the range lost on import)."""
    ce = config_to_entry("x", write(tmp_path, "x", "lxc.idmap = u 0 200000 65536\n"
                                                     "lxc.idmap = g 0 300000 65536\n"))
    assert ce.entry["privileged"] is False
    assert ce.entry["idmap"] == {"uid": 200000, "gid": 300000, "count": 65536}
    legacy = config_to_entry("y", write(tmp_path, "y", "lxc.id_map = u 0 100000 65536\n"
                                                        "lxc.id_map = g 0 100000 65536\n"))
    assert legacy.entry["idmap"] == {"uid": 100000, "gid": 100000, "count": 65536}


def test_an_id_map_in_an_included_file_is_followed(tmp_path):
    """lxc-create -t download with userns: the map sits in an included file. Dropping it
    made the import silently privileged."""
    inc = tmp_path / "userns.conf"
    inc.write_text("lxc.include = " + str(tmp_path / "conf.d") + "\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-idmap.conf").write_text("lxc.idmap = b 0 400000 65536\n")
    ce = config_to_entry("x", write(tmp_path, "x", f"lxc.include = {inc}\n"
                                                     "lxc.include = /no/such/common.conf\n"))
    assert ce.entry["privileged"] is False
    assert ce.entry["idmap"] == {"uid": 400000, "gid": 400000, "count": 65536}
    assert any("/no/such/common.conf" in n for n in ce.notes)


def test_an_id_map_virtmix_cannot_represent_never_makes_it_privileged(tmp_path):
    ce = config_to_entry("x", write(tmp_path, "x", "lxc.idmap = u 1 200000 10\n"))
    assert ce.entry["privileged"] is False and "idmap" not in ce.entry
    assert any("starting at container id 0" in n for n in ce.notes)


def test_imported_idmap_renders_as_the_domains_idmap(tmp_path):
    write(tmp_path / "lxc", "web1", "lxc.rootfs.path = dir:/var/lib/lxc/web1/rootfs\n"
                                    "lxc.idmap = u 0 200000 65536\nlxc.idmap = g 0 200000 "
                                    "65536\n")
    items = [Imported(c.name, "container", c.entry, c.notes)
             for c in classic_containers(tmp_path / "lxc")]
    out = tmp_path / "site.yaml"
    out.write_text(dump(inventory_document("hv1", "qemu:///system", "lxc:///system", "v1",
                                           items), items, str(tmp_path / "lxc")))
    site = load_site(out)
    from virtmix.render.views import container_idmap

    assert container_idmap(site, site.find("web1")) == (0, 200000, 65536, 200000)


def test_imported_classic_containers_load_as_an_inventory(tmp_path):
    write(tmp_path / "lxc", "web1", LXC3)
    write(tmp_path / "lxc", "old1", LXC2)
    found = classic_containers(tmp_path / "lxc")
    assert [c.name for c in found] == ["old1", "web1"]
    items = [Imported(c.name, "container", c.entry, c.notes) for c in found]
    text = dump(inventory_document("hv1", "qemu:///system", "lxc:///system", "v1", items),
                items, str(tmp_path / "lxc"))
    inv = tmp_path / "imported.yaml"
    inv.write_text(text)
    site = load_site(inv)
    web1 = site.find("web1")
    assert web1.spec.cpu.shares == 512 and web1.spec.cpu.cpuset == "0-1"
    assert web1.spec.memtune.hard_limit == 256 * 1024
    assert site.find("old1").spec.init == ["/bin/sh", "-c", "sleep infinity"]
    assert text.startswith("# Written by `virtmix import`")
    assert "# web1: " in textwrap.dedent(text)


def test_classic_containers_from_a_config_file_a_container_dir_or_an_lxcpath(tmp_path):
    write(tmp_path / "lxc", "web1", LXC3)
    write(tmp_path / "lxc", "old1", LXC2)
    lxc = tmp_path / "lxc"
    assert [c.name for c in classic_containers(lxc / "web1" / "config")] == ["web1"]
    assert [c.name for c in classic_containers(lxc / "old1")] == ["old1"]
    assert [c.name for c in classic_containers(lxc, {"web1"})] == ["web1"]
    with pytest.raises(NotFoundError, match="no such file or directory"):
        classic_containers(lxc / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no classic LXC container in it"):
        classic_containers(tmp_path / "empty")


def test_import_cli_takes_lxc_paths_as_arguments_and_then_reads_only_them(tmp_path):
    """`virtmix import /var/lib/lxc/web1/config`: that container only, no libvirt domains
    (-c names a daemon that cannot exist, to prove none is asked); bad paths exit 6."""
    from typer.testing import CliRunner

    from virtmix.cli import app

    write(tmp_path / "lxc", "web1", LXC3)
    runner = CliRunner()
    res = runner.invoke(app, ["import", str(tmp_path / "lxc" / "web1" / "config"),
                              "--output-file", str(tmp_path / "inv.yaml")],
                        env={"LIBVIRT_DEFAULT_URI": "test:///nonexistent/node.xml"})
    assert res.exit_code == 0, res.output
    site = load_site(tmp_path / "inv.yaml")
    assert [e.name for e in site.entries] == ["web1"]
    bad = runner.invoke(app, ["import", str(tmp_path / "nope")])
    assert bad.exit_code == 6 and "no such file or directory" in bad.output
    two = runner.invoke(app, ["import", "lxc:///system", "qemu:///system"])
    assert two.exit_code == 2 and "one libvirt URI at a time" in two.output
