"""The base tree's systemd-update-done stamps and masked units (recipe 5): a clone's first
boot runs no ConditionNeedsUpdate= unit (systemd-sysusers) and no systemd-remount-fs.
Offline: prepare_base on a stand-in tree; tests/live/test_density.py boots the real one."""

from __future__ import annotations

import os
from pathlib import Path

from virtmix.rootfs.base_setup import prepare_base
from virtmix.rootfs.spec import RECIPE_VERSION, RootfsSpec


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for d in ("etc/systemd/system", "usr/lib/systemd/system", "var/lib", "usr/bin"):
        (tree / d).mkdir(parents=True)
    os.utime(tree / "usr", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    return tree


def test_stamps_hold_the_mtime_of_usr_as_systemd_update_done_writes_them(tmp_path):
    tree = _tree(tmp_path)
    prepare_base(tree)
    usr_ns = os.stat(tree / "usr").st_mtime_ns
    for d in ("etc", "var"):
        stamp = tree / d / ".updated"
        assert os.stat(stamp).st_mtime_ns == usr_ns  # not older: the condition is false
        assert f"TIMESTAMP_NSEC={usr_ns}\n" in stamp.read_text()


def test_remount_fs_is_masked(tmp_path):
    tree = _tree(tmp_path)
    prepare_base(tree)
    unit = tree / "etc/systemd/system/systemd-remount-fs.service"
    assert os.readlink(unit) == "/dev/null"


def test_the_recipe_change_changes_the_cache_key():
    spec = RootfsSpec(suite="bookworm")
    assert RECIPE_VERSION >= 5
    assert spec.key_fields("amd64")["recipe"] == RECIPE_VERSION
