"""Secrets are root's alone, lock files never follow symlinks or truncate, ssh hosts are never
options (issue 9: paths, files and secrets)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from virtmix.errors import BackendError, ConflictError, UsageError
from virtmix.util.files import make_dir, write_atomic
from virtmix.util.locking import HOLDER_WIDTH, lock_dir, lock_name, locked


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- write_atomic ---------------------------------------------------------------------------
def test_write_atomic_creates_with_the_final_mode_and_replaces(tmp_path):
    target = tmp_path / "secret"
    old_umask = os.umask(0)  # even with a permissive umask, never wider than asked
    try:
        write_atomic(target, b"one", mode=0o600)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"one" and mode(target) == 0o600
    target.chmod(0o644)
    write_atomic(target, b"two", mode=0o600)  # an old, too open file is replaced
    assert target.read_bytes() == b"two" and mode(target) == 0o600
    write_atomic(tmp_path / "plain", b"x")
    assert mode(tmp_path / "plain") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "secret"]  # no temp left


def test_write_atomic_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "state.json"
    link.symlink_to(victim)
    write_atomic(link, b"{}", mode=0o600)
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and link.read_bytes() == b"{}"


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_make_dir_never_changes_a_directory_it_did_not_create(tmp_path):
    mine = tmp_path / "a" / "b"
    assert make_dir(mine, 0o700) and mode(mine) == 0o700
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    theirs.chmod(0o755)
    assert not make_dir(theirs, 0o700)
    assert mode(theirs) == 0o755


def test_storage_keeps_the_admins_storage_dir_mode(tmp_path):
    from virtmix.rootfs.storage import Storage

    root = tmp_path / "admins"
    root.mkdir()
    root.chmod(0o750)
    storage = Storage(root)
    storage.ensure()
    assert mode(root) == 0o750  # the admin's: untouched
    assert mode(root / "locks") == 0o700 and mode(root / "containers") == 0o711


# -- locks ----------------------------------------------------------------------------------
def test_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(locks))
    assert lock_dir() == locks and mode(locks) == 0o700
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (locks / lock_name("inventory", "/site.yaml")).symlink_to(victim)
    with pytest.raises(ConflictError, match="symlink"), \
            locked([("inventory", "/site.yaml")], purpose="test"):
        pass
    assert victim.read_text() == "precious\n"


def test_lock_file_is_never_truncated(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(locks))
    lock_dir()
    path = locks / lock_name("uri", "lxc:///system")
    path.write_bytes(b"x" * 1000)
    with locked([("uri", "lxc:///system")], purpose="apply"):
        data = path.read_bytes()
        assert data.startswith(b"pid ") and b"(apply," in data
        assert len(data) == 1000  # written over, not truncated
    assert path.read_bytes()[:HOLDER_WIDTH].strip() == b""
    assert len(path.read_bytes()) == 1000


def test_lock_dir_open_to_others_is_refused(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    locks.mkdir()
    locks.chmod(0o777)
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(locks))
    with pytest.raises(ConflictError, match="mode 0777"):
        lock_dir()
    assert mode(locks) == 0o777  # not virtmix's: reported, not changed


def test_lock_dir_that_is_a_symlink_is_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(real)
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(tmp_path / "locks"))
    with pytest.raises(ConflictError, match="not a directory"):
        lock_dir()


def test_storage_lock_refuses_a_planted_symlink(tmp_path):
    from virtmix.rootfs.storage import Storage

    storage = Storage(tmp_path / "st")
    storage.ensure()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (storage.root / "locks" / "container-c1.lock").symlink_to(victim)
    with pytest.raises(ConflictError, match="symlink"), storage.lock("container-c1"):
        pass
    assert victim.read_text() == "precious\n"


# -- ssh: `--` before the host, never a host that is an option ------------------------------
def test_guest_ssh_argv_ends_options_before_the_host(tmp_path):
    from virtmix.images import keys
    from virtmix.rootfs.storage import Storage

    storage = Storage(tmp_path / "st")
    argv = keys.ssh_argv(storage, "10.0.0.5")
    assert argv[-2:] == ["--", "root@10.0.0.5"]
    with pytest.raises(BackendError, match="option"):
        keys.ssh_argv(storage, "-oProxyCommand=touch /tmp/pwned")


def test_nested_ssh_argv_ends_options_and_refuses_an_option_host():
    from virtmix.nesting.ops import ssh_argv

    assert ssh_argv("lxc+ssh://root@10.0.0.5/system")[-2:] == ["--", "root@10.0.0.5"]
    assert ssh_argv("LXC+SSH://10.0.0.5/system")[-2:] == ["--", "10.0.0.5"]
    with pytest.raises(UsageError, match="starts with '-'"):
        ssh_argv("lxc+ssh://-oProxyCommand=x/system")


def test_ssh_really_takes_the_dash_host_as_a_host(tmp_path):
    """With `--`, ssh treats '-oProxyCommand=...' as a host name, not as an option."""
    marker = tmp_path / "pwned"
    proc = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=1", "--",
                           f"-oProxyCommand=touch {marker}", "true"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0 and not marker.exists()


def test_uri_schemes_are_compared_case_insensitively(tmp_path):
    from virtmix.images import keys
    from virtmix.nesting.ops import is_ssh_uri
    from virtmix.rootfs.storage import Storage

    assert is_ssh_uri("LXC+SSH://root@h/system") and is_ssh_uri("lxc+LibSSH://h/system")
    uri = keys.transport_uri(Storage(tmp_path / "st"), "LXC+SSH://root@h/system")
    assert "command=" in uri


def test_state_json_mode_after_provision_records(tmp_path):
    from virtmix.rootfs.storage import Storage

    storage = Storage(tmp_path / "st")
    storage.ensure()
    storage.container_dir("c2").mkdir()
    storage.write_state("c2", {"password_file": "x"})
    assert json.loads((storage.container_dir("c2") / "state.json").read_text())
    assert mode(storage.container_dir("c2") / "state.json") == 0o600
