"""Clones from the cached base: own identity, credentials, ownership, clone methods."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import warnings
from pathlib import Path

import pytest

from virtmix.errors import RootfsError
from virtmix.rootfs import (
    IDMAP,
    container_state,
    ensure_mounted,
    list_cache,
    prune_cache,
)
from virtmix.rootfs.storage import is_mount_point
from virtmix.util.idranges import isolated

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # Python 3.11's libcrypt binding: checks hashes the way login does

pytestmark = pytest.mark.slow
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv6mxA6cd1Uo3eV+H8hYwqzF6QzZsCwyhVJ0RM0L0Gm test@x"
TRIVIAL = ("", "root", "toor", "password", "debian", "123456", "admin", "changeme")


def _root_shadow(tree: Path) -> str:
    for line in (tree / "etc/shadow").read_text().splitlines():
        if line.startswith("root:"):
            return line.split(":")[1]
    raise AssertionError("no root in /etc/shadow")


def _usable_with(hashed: str, password: str) -> bool:
    if hashed == "":
        return True  # an empty field means no password at all
    if hashed.startswith(("!", "*")):
        return False
    return crypt.crypt(password, hashed) == hashed


def test_two_clones_have_their_own_identity(make_container, bookworm_shifted):
    a = make_container("id-a", sshd=True, ssh_keys=(KEY,))
    b = make_container("id-b", sshd=True, ssh_keys=(KEY,))
    # each its own id range (was: both the shared IDMAP 0 -> 100000), unless the host runs
    # with VIRTMIX_IDMAP=shared (docs/rootfs.md: hosts sharing one name=systemd cgroup)
    assert a.method == b.method == "overlay"
    if isolated():
        assert a.idmap != b.idmap and IDMAP[1] not in (a.idmap[1], b.idmap[1])
    else:
        assert a.idmap == b.idmap == (*IDMAP, IDMAP[1])
    mid = [(r.path / "etc/machine-id").read_text().strip() for r in (a, b)]
    assert all(len(m) == 32 for m in mid) and mid[0] != mid[1]
    for kind in ("rsa", "ecdsa", "ed25519"):
        keys = [(r.path / f"etc/ssh/ssh_host_{kind}_key.pub").read_text() for r in (a, b)]
        assert keys[0].split()[1] != keys[1].split()[1]
    assert (a.path / "etc/hostname").read_text() == "vmixt-rootfs-id-a\n"
    assert "vmixt-rootfs-id-b" in (b.path / "etc/hosts").read_text()
    # sshd is a package of the base: these two came from a different entry than plain ones
    assert a.cache_entry != bookworm_shifted.entry
    ak = a.path / "root/.ssh/authorized_keys"
    assert ak.read_text().strip() == KEY
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert ak.stat().st_uid == a.idmap[1]  # root inside the container


def test_root_is_locked_without_keys_or_password(make_container, storage, bookworm_shifted):
    r = make_container("locked")
    hashed = _root_shadow(r.path)
    assert hashed.startswith("!")
    assert not any(_usable_with(hashed, pw) for pw in TRIVIAL)
    assert r.password is None and r.password_file is None
    assert container_state(storage, r.name)["root_login"] == "locked"


def test_generated_password_is_shown_once_and_stored_0600(make_container, storage,
                                                          bookworm_shifted):
    r = make_container("pw", root_password="generate")
    assert r.password and len(r.password) >= 16
    hashed = _root_shadow(r.path)
    assert hashed.startswith("$6$") and _usable_with(hashed, r.password)
    assert not any(_usable_with(hashed, pw) for pw in TRIVIAL)
    st = os.stat(r.password_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert r.password_file.read_text().strip() == r.password
    state_text = (storage.container_dir(r.name) / "state.json").read_text()
    assert r.password not in state_text and json.loads(state_text)["root_login"] == "password"
    # provisioning again changes nothing and never shows the password again
    again = make_container("pw", root_password="generate")
    assert not again.created and again.password is None
    assert _root_shadow(again.path) == hashed


def test_unprivileged_tree_is_owned_by_the_mapped_range(make_container, bookworm_shifted):
    r = make_container("owner", timezone="Europe/Paris")
    first, count = r.idmap[1], r.idmap[2]  # its own range (was the shared IDMAP)
    outside = [str(p) for p in _walk(r.path)
               if not first <= os.lstat(p).st_uid < first + count
               or not first <= os.lstat(p).st_gid < first + count]
    assert outside == []
    assert os.lstat(r.path).st_uid == first
    assert os.readlink(r.path / "etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    # setuid bits survive the shift (chown clears them; idmap puts them back)
    su = r.path / "usr/bin/su"
    assert su.stat().st_mode & stat.S_ISUID and su.stat().st_uid == first


def _walk(root: Path):
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield Path(dirpath) / n


def test_privileged_copy_clone(make_container, storage, bookworm_base):
    r = make_container("priv-copy", privileged=True, clone="copy")
    assert r.method == "copy" and r.idmap is None and r.privileged
    assert not is_mount_point(r.path)
    assert os.lstat(r.path / "etc/passwd").st_uid == 0
    assert container_state(storage, r.name)["cache_entry"] == bookworm_base[0].entry
    # copy clones do not need their base: pruning with --all may remove it, keep_used not
    assert bookworm_base[0].entry not in prune_cache(storage, keep_used=True,
                                                     entries=[bookworm_base[0].entry])
    users = {e.entry: e for e in list_cache(storage, sizes=False)}
    assert r.name in users[bookworm_base[0].entry].used_by


def test_overlay_clone_is_remounted_after_unmount(make_container, storage, bookworm_shifted):
    r = make_container("remount")
    (r.path / "root/marker").write_text("kept\n")
    subprocess.run(["umount", str(r.path)], check=True)
    assert not is_mount_point(r.path) and not (r.path / "root/marker").exists()
    ensure_mounted(storage, r.name)
    ensure_mounted(storage, r.name)  # idempotent
    assert is_mount_point(r.path) and (r.path / "root/marker").read_text() == "kept\n"
    # overlay lowers are never pruned, whatever keep_used says (the lower is now the copy
    # shifted to this container's own range, no longer the shared bookworm_shifted)
    assert r.cache_entry not in prune_cache(storage, keep_used=False,
                                            entries=[r.cache_entry])


def test_explicit_reflink_on_a_filesystem_without_it_fails_cleanly(make_container, storage,
                                                                    bookworm_shifted):
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(storage.root)], capture_output=True,
                        text=True, check=True).stdout.strip()
    if fs in ("btrfs", "xfs"):
        r = make_container("reflink", clone="reflink")
        assert r.method == "reflink"
        return
    with pytest.raises(RootfsError, match="reflink"):
        make_container("reflink", clone="reflink")
    assert not storage.container_dir("vmixt-rootfs-reflink").exists()


def test_existing_tree_is_kept_flagged_stale_or_refused(make_container, bookworm_shifted):
    from virtmix.rootfs import RootfsSpec

    r = make_container("again")
    mid = (r.path / "etc/machine-id").read_text()
    same = make_container("again")
    assert not same.created and not same.stale and same.path == r.path
    assert (r.path / "etc/machine-id").read_text() == mid  # not re-customised
    other = make_container("again", RootfsSpec(suite="bookworm", packages=("less",)))
    assert not other.created and other.stale  # nothing was built for it
    with pytest.raises(RootfsError, match="privileged=False"):
        make_container("again", privileged=True)
