"""A guest's files that embed its private host key are root's alone (issue 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_guest_config_stamp_holds_no_private_key_and_is_root_only(nested_site, tmp_path):
    from virtmix.images.guest import _config_initrd
    from virtmix.rootfs.storage import Storage

    storage = Storage(tmp_path / "st")
    storage.ensure()
    gdir = tmp_path / "g1"
    gdir.mkdir()
    (gdir / "host_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETBYTES\n")
    (gdir / "host_key").chmod(0o600)  # as ssh-keygen makes it
    base = tmp_path / "initrd.base"
    base.write_bytes(b"BASE")
    _config_initrd(storage, nested_site.find("g1"), gdir, base, "ssh-ed25519 AAAA root@g1")
    for name in ("config.json", "initrd.img"):
        assert mode(gdir / name) == 0o600, name
    assert b"SECRETBYTES" not in (gdir / "config.json").read_bytes()
    for name in ("id_ed25519",):
        assert mode(storage.root / "ssh" / name) & 0o077 == 0, name
    assert mode(storage.root / "ssh") == 0o700


def test_every_json_state_with_a_secret_in_a_guest_dir_is_root_only(nested_site, tmp_path):
    """Whatever prepare writes next to the host key: a file that embeds it is 0600."""
    from virtmix.images.guest import _config_initrd
    from virtmix.rootfs.storage import Storage

    storage = Storage(tmp_path / "st")
    gdir = tmp_path / "g1"
    gdir.mkdir()
    (gdir / "host_key").write_text("PRIV-KEY-MATERIAL\n")
    (gdir / "host_key").chmod(0o600)  # as ssh-keygen makes it
    (tmp_path / "b").write_bytes(b"B")
    _config_initrd(storage, nested_site.find("g1"), gdir, tmp_path / "b", "ssh-ed25519 A g")
    for p in gdir.iterdir():
        if b"PRIV-KEY-MATERIAL" in p.read_bytes():
            assert mode(p) & 0o077 == 0, p
