"""Guest images: spec and cache key, per-guest network files and the initrd that carries
a guest's own files (no build here: tests/live/test_nesting.py builds and boots one)."""

from __future__ import annotations

import subprocess

import pytest

from virtmix.errors import InventoryError
from virtmix.images import ImageSpec, guest_address
from virtmix.images.guest import _config_initrd, _network_files
from virtmix.images.spec import BASE_PACKAGES
from virtmix.rootfs.storage import Storage


def test_cache_key_ignores_package_order_and_duplicates():
    a = ImageSpec(packages=("vim", "curl"))
    assert a.cache_key == ImageSpec(packages=("curl", "vim", "curl")).cache_key
    assert a.cache_key != ImageSpec().cache_key
    assert a.cache_key != ImageSpec(packages=("vim", "curl"), suite="trixie").cache_key
    assert a.cache_key.startswith("debian-bookworm-amd64-")
    assert set(BASE_PACKAGES) <= set(a.all_packages)


@pytest.mark.parametrize("kwargs, match", [
    ({"packages": ("vim; rm -rf /",)}, "package"),
    ({"suite": "../x"}, "suite"),
    ({"size_kib": 1024}, "at least 1GiB"),
    ({"distro": "ubuntu"}, "only 'debian'"),
])
def test_bad_specs(kwargs, match):
    with pytest.raises(InventoryError, match=match):
        ImageSpec(**kwargs)


def test_network_file_matches_the_mac_libvirt_gets(nested_site):
    g1 = nested_site.find("g1")
    from virtmix.render.views import domain_view

    mac = domain_view(nested_site, g1).interfaces[0].mac
    assert _network_files(g1) == {"10-virtmix-eth0.network": (
        f"[Match]\nMACAddress={mac}\n\n[Network]\nAddress=10.213.99.10/24\nDHCP=no\n")}
    assert guest_address(g1) == "10.213.99.10"


def test_guest_initrd_is_the_base_plus_an_aligned_cpio(nested_site, tmp_path):
    storage = Storage(tmp_path / "st")
    storage.ensure()
    gdir = tmp_path / "g1"
    gdir.mkdir()
    (gdir / "host_key").write_text("PRIVATE\n")
    base = tmp_path / "initrd.base"
    base.write_bytes(b"BASE!")  # 5 bytes: the appended archive must start at offset 8
    _config_initrd(storage, nested_site.find("g1"), gdir, base, "ssh-ed25519 AAAA root@g1")
    data = (gdir / "initrd.img").read_bytes()
    assert data[:8] == b"BASE!\0\0\0" and data[8:14] == b"070701"  # newc magic
    assert (gdir / "initrd.img").stat().st_mode & 0o077 == 0  # holds a private key
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=data[8:], capture_output=True,
                             check=True).stdout.decode().split()
    assert {"virtmix/hostname", "virtmix/ssh_host_ed25519_key", "virtmix/authorized_keys",
            "virtmix/network/10-virtmix-eth0.network"} <= set(listing)
    before = (gdir / "initrd.img").stat().st_mtime_ns
    _config_initrd(storage, nested_site.find("g1"), gdir, base, "ssh-ed25519 AAAA root@g1")
    assert (gdir / "initrd.img").stat().st_mtime_ns == before  # unchanged: not rewritten


@pytest.mark.parametrize("key", ["debian-bookworm-amd64-nosuch", "..", "a/b"])
def test_image_rm_of_an_unknown_key_is_not_found(tmp_path, key):
    from typer.testing import CliRunner

    from virtmix.cli import app

    (tmp_path / "st" / "images").mkdir(parents=True)
    res = CliRunner().invoke(app, ["image", "rm", key, "--storage", str(tmp_path / "st")])
    assert res.exit_code == 6, res.output
    assert f"no cached image {key!r}" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["images"]
