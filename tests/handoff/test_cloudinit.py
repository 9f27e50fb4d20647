"""cloud-init hand-off without a daemon: seed documents, the cidata ISO, image downloads,
the guest's cdrom, and inventory errors."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pycdlib
import pytest
import yaml
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.converge.prepare import seed_pins_host_key
from virtmix.errors import RootfsError
from virtmix.images.download import fetch_image
from virtmix.inventory.load import load_site
from virtmix.rootfs.cloudinit import seed_documents, write_seed_dir, write_seed_iso
from virtmix.rootfs.storage import Storage
from virtmix.util.identity import mac_address

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0h5N0s1wh1A6dBUSbXUhQJ9Bwz3uYtN8X2WcDm3vGq t@x"


def site_file(tmp_path: Path, guest: dict, container: dict | None = None) -> Path:
    doc = {"name": "ci", "settings": {"storage_dir": str(tmp_path / "st")},
           "networks": {"lan": {"host": "hv1", "bridge": "vmixtci0", "ipv4": "10.213.90.1/24"}},
           "hosts": {"hv1": {"virt_type": "qemu", "guests": {"cg": guest},
                             "containers": {"cc": container or {"ssh_keys": [KEY]}}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


GUEST = {"image": {"path": "/srv/debian-12-genericcloud-amd64.qcow2"}, "ssh_keys": [KEY],
         "interfaces": [{"network": "lan", "ipv4": "10.213.90.20/24", "gateway": "10.213.90.1"}]}


def test_guest_seed_has_hostname_keys_and_static_address(tmp_path):
    site = load_site(site_file(tmp_path, GUEST))
    g = site.find("cg")
    docs = seed_documents(g.name, g.uri, g.kind, g.spec, site.inventory.networks)
    meta = yaml.safe_load(docs["meta-data"])
    assert meta["local-hostname"] == "cg" and meta["instance-id"].startswith("virtmix-")
    assert docs["user-data"].startswith("#cloud-config\n")
    user = yaml.safe_load(docs["user-data"])
    assert user["hostname"] == "cg" and user["ssh_authorized_keys"] == [KEY]
    assert user["disable_root"] is False  # root logs in with the key (virtmix, Ansible)
    net = yaml.safe_load(docs["network-config"])
    assert net["version"] == 2
    assert net["ethernets"]["eth0"] == {
        "match": {"macaddress": mac_address(g.uri, "cg", 0)}, "set-name": "eth0",
        "dhcp4": False, "addresses": ["10.213.90.20/24"],
        "routes": [{"to": "0.0.0.0/0", "via": "10.213.90.1"}],
        "nameservers": {"addresses": ["10.213.90.1"]}}
    assert "vendor-data" not in docs


def test_user_data_mapping_is_merged_and_text_passed_through(tmp_path):
    guest = {**GUEST, "cloud_init": {"user_data": {"packages": ["hello"], "hostname": "other"},
                                     "vendor_data": "#cloud-config\nruncmd: [true]"}}
    site = load_site(site_file(tmp_path, guest))
    g = site.find("cg")
    docs = seed_documents(g.name, g.uri, g.kind, g.spec, site.inventory.networks)
    user = yaml.safe_load(docs["user-data"])
    assert user["packages"] == ["hello"] and user["hostname"] == "other"
    assert user["ssh_authorized_keys"] == [KEY]
    assert docs["vendor-data"] == "#cloud-config\nruncmd: [true]\n"
    mime = {**GUEST, "cloud_init": {"user_data": "Content-Type: multipart/mixed\n..."}}
    site = load_site(site_file(tmp_path, mime))
    g = site.find("cg")
    docs = seed_documents(g.name, g.uri, g.kind, g.spec, site.inventory.networks)
    assert docs["user-data"] == "Content-Type: multipart/mixed\n...\n"  # as it is
    assert yaml.safe_load(docs["meta-data"])["public-keys"] == [KEY]
    assert not seed_pins_host_key(g)


def parts(user_data: str) -> list[tuple[str, str]]:
    """(type, text) of each part, as cloud-init reads a multipart user-data."""
    import email

    msg = email.message_from_string(user_data)
    assert msg.get_content_type() == "multipart/mixed"
    return [(p.get_content_type(), p.get_payload(decode=True).decode())
            for p in msg.walk() if not p.is_multipart()]


@pytest.mark.parametrize(("text", "mime"), [
    ("#!/bin/sh\necho hi > /run/x\n", "text/x-shellscript"),
    ("#cloud-config\npackages: [hello]\n", "text/cloud-config"),
    ("#cloud-boothook\n#!/bin/sh\necho é\n", "text/cloud-boothook"),
])
def test_user_data_text_goes_beside_virtmix_part_and_the_key_is_pinned(tmp_path, text, mime):
    """A script or #cloud-config text: a second part after virtmix's #cloud-config, so the
    guest still gets the host key virtmix pins, its hostname and the keys."""
    site = load_site(site_file(tmp_path, {**GUEST, "cloud_init": {"user_data": text}}))
    g = site.find("cg")
    assert seed_pins_host_key(g)
    host_key = ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "ssh-ed25519 AAAA root@cg")
    docs = seed_documents(g.name, g.uri, g.kind, g.spec, site.inventory.networks, host_key)
    (t1, ours), (t2, theirs) = parts(docs["user-data"])
    assert (t1, t2) == ("text/cloud-config", mime) and theirs == text
    ours = yaml.safe_load(ours)
    assert ours["hostname"] == "cg" and ours["ssh_authorized_keys"] == [KEY]
    assert ours["ssh_keys"] == {"ed25519_private": host_key[0], "ed25519_public": host_key[1]}
    if text.isascii():  # 8bit: the admin's text is readable in the seed as written
        assert text in docs["user-data"]
    again = seed_documents(g.name, g.uri, g.kind, g.spec, site.inventory.networks, host_key)
    assert again == docs  # a fixed boundary: the seed changes only with the inventory


def test_seed_iso_is_labelled_cidata_with_the_documents(tmp_path):
    docs = {"meta-data": "instance-id: x\n", "user-data": "#cloud-config\n",
            "network-config": "version: 2\n"}
    path = tmp_path / "seed.iso"
    write_seed_iso(path, docs)
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, text in docs.items():
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            assert out.getvalue().decode() == text
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            assert out.getvalue().decode() == text
    finally:
        iso.close()
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]  # no temporary left


def test_container_seed_disables_network_config_and_lands_in_the_tree(tmp_path):
    site = load_site(site_file(tmp_path, GUEST))
    c = site.find("cc")
    docs = seed_documents(c.name, c.uri, c.kind, c.spec, site.inventory.networks)
    assert yaml.safe_load(docs["network-config"]) == {"network": {"config": "disabled"}}
    write_seed_dir(tmp_path / "tree", docs)
    seed = tmp_path / "tree/var/lib/cloud/seed/nocloud"
    assert yaml.safe_load((seed / "user-data").read_text())["ssh_authorized_keys"] == [KEY]
    assert (seed / "meta-data").stat().st_mode & 0o777 == 0o600


def test_guest_on_a_given_image_gets_the_seed_cdrom(tmp_path):
    res = CliRunner().invoke(app, ["render", str(site_file(tmp_path, GUEST)), "--name", "cg"])
    assert res.exit_code == 0, res.output
    assert "<disk type='file' device='cdrom'>" in res.stdout
    assert f"{tmp_path}/st/guests/cg/seed.iso" in res.stdout and "<readonly/>" in res.stdout
    assert "<boot dev='hd'/>" in res.stdout  # the cloud image's own bootloader


def test_download_once_with_checksum(tmp_path):
    src = tmp_path / "img.qcow2"
    src.write_bytes(b"not really qcow2" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    storage = Storage(tmp_path / "st")
    got = fetch_image(storage, src.as_uri(), f"sha256:{digest}")
    assert got.read_bytes() == src.read_bytes() and got.name == f"{digest}.qcow2"
    src.unlink()  # cached: no second download
    assert fetch_image(storage, src.as_uri(), f"sha256:{digest}") == got


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    src = tmp_path / "img.qcow2"
    src.write_bytes(b"abc")
    storage = Storage(tmp_path / "st")
    with pytest.raises(RootfsError, match="sha256 is"):
        fetch_image(storage, src.as_uri(), "sha256:" + "0" * 64)
    assert list((tmp_path / "st/images/downloads").iterdir()) == []


@pytest.mark.parametrize(("image", "message"), [
    ({"url": "file:///x.qcow2"}, "needs 'checksum"),
    ({"url": "ftp://x/y.qcow2", "checksum": "sha256:" + "a" * 64}, "expected http"),
    ({"path": "/x.qcow2", "url": "file:///x.qcow2", "checksum": "sha256:" + "a" * 64},
     "not both"),
    ({"url": "file:///x.qcow2", "checksum": "md5:abc"}, "image.checksum"),
])
def test_bad_image_source_is_an_inventory_error(tmp_path, image, message):
    res = CliRunner().invoke(app, ["validate", str(site_file(tmp_path, {**GUEST,
                                                                      "image": image}))])
    assert res.exit_code == 3 and message in res.output, res.output


def test_destroy_forgets_a_cloud_guests_pinned_key(tmp_path):
    """delete_files of a cloud-image guest's directory removes its host key's pin (any
    address), and leaves other pins alone."""
    from virtmix.converge.destroy import delete_files
    from virtmix.images import keys
    from virtmix.util import layout

    storage = Storage(tmp_path / "st")
    gdir = tmp_path / "st/guests/cg"
    gdir.mkdir(parents=True)
    (gdir / layout.GUEST_FILES_MARKER).write_bytes(b"")
    pub = keys.make_host_key(gdir / "host_key", "cg")
    (gdir / "root.qcow2").write_bytes(b"")
    keys.pin_host_key(storage, "10.213.90.20", pub)
    keys.pin_host_key(storage, "10.213.90.21", KEY)
    xml = (f"<domain type='qemu'><name>cg</name><devices><disk type='file' device='disk'>"
           f"<source file='{gdir}/root.qcow2'/><target dev='vda'/></disk></devices></domain>")
    assert delete_files("cg", xml) == [str(gdir)]
    assert not gdir.exists()
    assert keys.known_hosts(storage).read_text() == f"10.213.90.21 {' '.join(KEY.split()[:2])}\n"


def test_relative_image_path_is_taken_from_the_inventory_directory(tmp_path):
    """The issue's own example: `image: {path: debian-12-genericcloud-amd64.qcow2}` beside
    site.yaml. A base image is only an overlay's backing file: no "guest can write" warning."""
    guest = {**GUEST, "image": {"path": "debian-12-genericcloud-amd64.qcow2"}}
    site = load_site(site_file(tmp_path, guest))
    g = site.find("cg")
    assert g.spec.image.path == f"{tmp_path}/debian-12-genericcloud-amd64.qcow2"
    assert not [w for w in site.warnings if "image.path" in w], site.warnings
    guest = {**GUEST, "image": {"path": "../images/x.qcow2"}}
    assert load_site(site_file(tmp_path, guest)).find("cg").spec.image.path == \
        f"{tmp_path.parent}/images/x.qcow2"
    res = CliRunner().invoke(app, ["validate", str(site_file(tmp_path, {
        **GUEST, "image": {"path": "a\x01b.qcow2"}}))])
    assert res.exit_code == 3 and "image.path" in res.output, res.output
