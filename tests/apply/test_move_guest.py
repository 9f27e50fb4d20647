"""What a guest move needs on the target: the files its definition names, the images made
there like the source's, undone on failure; the migration URI from `migration_address`.
(The moves themselves, live and cold between two real QEMU daemons, are in
tests/live/test_guest_migrate.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from virtmix.converge.move_guest import (
    TargetFiles,
    guest_files,
    image_info,
    migration_uri,
    migration_uri_for,
)
from virtmix.errors import InventoryError
from virtmix.hosts import host_for
from virtmix.inventory.load import load_site

GUEST_XML = """<domain type='qemu'><name>g</name>
<os><type>hvm</type><kernel>/boot/k/vmlinuz</kernel><initrd>/boot/k/initrd.img</initrd></os>
<devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='/st/guests/g/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
    <source file='/st/guests/g/seed.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
  <disk type='file' device='cdrom'><target dev='sdb' bus='sata'/><readonly/></disk>
  <disk type='file' device='disk'><source file='/data/extra.img'/>
    <target dev='vdb' bus='virtio'/></disk>
  <serial type='file'><source path='/st/guests/g/serial.log'/></serial>
  <console type='pty'><log file='/var/log/g-console.log'/></console>
</devices></domain>"""


def test_guest_files_are_read_from_the_definition():
    files = guest_files(GUEST_XML)
    assert files.boot == ["/boot/k/vmlinuz", "/boot/k/initrd.img"]
    assert [(d.path, d.format, d.readonly) for d in files.disks] == [
        ("/st/guests/g/root.qcow2", "qcow2", False), ("/st/guests/g/seed.iso", "raw", True),
        ("/data/extra.img", "raw", False)]  # the empty cdrom drive has no file
    assert [d.path for d in files.writable] == ["/st/guests/g/root.qcow2", "/data/extra.img"]
    assert files.logs == ["/st/guests/g/serial.log", "/var/log/g-console.log"]
    assert files.dirs() == ["/st/guests/g", "/data", "/boot/k", "/var/log"]
    assert files.other_writable == []
    block = GUEST_XML.replace("<disk type='file' device='disk'><source file='/data/extra.img'/>",
                              "<disk type='block' device='disk'><source dev='/dev/vg/x'/>")
    assert guest_files(block).other_writable == ["block disk vdb"]


@pytest.mark.parametrize(("address", "uri"), [
    (None, None), ("127.0.0.1", "tcp://127.0.0.1"), ("hv2.example.net", "tcp://hv2.example.net"),
    ("fd00::2", "tcp://[fd00::2]")])
def test_migration_uri(address, uri):
    assert migration_uri(address) == uri


def _site(tmp_path: Path, address: object) -> Path:
    hv2: dict[str, object] = {"uri": "qemu+ssh://root@hv2/system", "virt_type": "qemu",
                              "guests": {"g": {"memory": "64MiB"}}}
    if address is not None:
        hv2["migration_address"] = address
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "mg", "hosts": {"hv2": hv2}}))
    return path


def test_migration_address_is_the_target_hosts(tmp_path):
    site = load_site(_site(tmp_path, "10.0.0.2"))
    assert migration_uri_for(site, site.find("g")) == "tcp://10.0.0.2"
    site = load_site(_site(tmp_path, None))
    assert migration_uri_for(site, site.find("g")) is None


@pytest.mark.parametrize("bad", ["tcp://10.0.0.2", "-oProxyCommand=x", "a b", ""])
def test_a_bad_migration_address_names_the_key(tmp_path, bad):
    with pytest.raises(InventoryError) as err:
        load_site(_site(tmp_path, bad))
    assert "hosts.hv2.migration_address" in str(err.value)


def test_target_images_are_made_like_the_sources_and_undone(tmp_path):
    """On a local "target" (this machine's files): which are missing, the directories and
    an overlay made like the source's (format, size, backing file), all removed by undo."""
    base, top = tmp_path / "base.qcow2", tmp_path / "src" / "root.qcow2"
    top.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(top), "16M"], check=True)
    img = image_info(host_for("test:///default"), str(top))
    assert (img.format, img.virtual_size, img.backing, img.chain) == (
        "qcow2", 16 * 2**20, str(base), [str(base)])
    tgt = TargetFiles("test:///default")
    there = tmp_path / "dst" / "guests" / "g"
    assert tgt.survey([str(base), str(there / "x")], [str(there), str(tmp_path)]) == {
        str(base)}
    assert tgt.dirs == [str(tmp_path / "dst")] and there.is_dir()  # the topmost it made
    img.path = str(there / "root.qcow2")
    tgt.create([img], str(there / ".virtmix-files"))
    made = image_info(host_for("test:///default"), img.path)
    assert (made.format, made.virtual_size, made.chain) == ("qcow2", 16 * 2**20, [str(base)])
    assert (there / ".virtmix-files").is_file()
    tgt.undo()
    assert not (tmp_path / "dst").exists() and base.exists() and top.exists()



def test_disks_an_interrupted_move_left_are_known_by_its_journal(tmp_path):
    """create() writes the journal first; a later move of the same guest (UUID) removes
    what it lists; another guest's disk, or one it does not list, is never touched."""
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    gdir = tmp_path / "guests" / "g"
    gdir.mkdir(parents=True)
    img = image_info(host_for("test:///default"), str(base))
    img.path = str(gdir / "root.qcow2")
    journal = str(gdir / ".virtmix-moving")
    TargetFiles("test:///default").create([img], None, (journal, "uuid-1", [img.path]))
    assert Path(journal).read_text() == f"uuid-1\n{img.path}\n"
    other = gdir / "data.img"
    other.write_bytes(b"x")
    tgt = TargetFiles("test:///default")
    assert not tgt.leftovers("uuid-2", [img.path])           # another guest's
    assert not tgt.leftovers("uuid-1", [img.path, str(other)])  # one it does not list
    assert Path(img.path).exists() and other.exists() and Path(journal).exists()
    assert tgt.leftovers("uuid-1", [img.path])
    assert not Path(img.path).exists() and not Path(journal).exists() and other.exists()
