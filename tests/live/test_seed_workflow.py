"""Issue 5's seed workflow on the real daemon, as an admin types it:
create -> start -> console (log in with the generated password) -> attach ps aux -> stop ->
destroy, plus the refusals and the remount of an overlay whose mount is gone.

The storage is the rootfs tests' shared directory, so the Debian base is built once per
machine (VIRTMIX_TEST_ROOTFS_DIR, default /var/tmp/virtmix-test-rootfs/shared).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import LXC, domstate, virsh, virtmix_argv, vm
from support import cleanup_domains, lxc_run, wait_for

from virtmix.errors import VirtmixError
from virtmix.rootfs import Storage, remove_container_tree

PFX = "vmixt-create-"
STORAGE = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs")) / "shared"
TMUX = "vmixt-create-console"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0h5N0s1wh1A6dBUSbXUhQJ9Bwz3uYtN8X2WcDm3vGq "
       "seed@virtmix-test")
PASSWORD_RE = re.compile(r"root password of (\S+) \(shown once; kept in (\S+), mode 0600\): (\S+)")


def _clean(conn, storage: Storage) -> None:
    cleanup_domains(conn, PFX)
    for name in storage.container_names():
        if name.startswith(PFX):
            with contextlib.suppress(VirtmixError):
                remove_container_tree(storage, name)
    subprocess.run(["tmux", "kill-session", "-t", TMUX], capture_output=True, check=False)


@pytest.fixture
def storage(lxc_conn) -> Iterator[Storage]:
    st = Storage(STORAGE)
    _clean(lxc_conn, st)  # leftovers of a crashed run
    yield st
    _clean(lxc_conn, st)


def create(name: str, *extra: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    return vm("create", name, "--template", "debian", "--suite", "bookworm", "--storage",
              str(STORAGE), *extra, check=check, timeout=900)


def mounted_below(path: Path) -> list[str]:
    return [ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()
            if ln.split()[1].startswith(str(path))]


# -- the console, driven through tmux -----------------------------------------------------
def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-J", "-S", "-", "-t", TMUX)


def console_login(name: str, password: str, shell_prompt: str | None = None) -> str:
    """virtmix console NAME in a terminal: login prompt, root + password, a command, Ctrl-]."""
    cmd = " ".join(virtmix_argv("console", name))
    tmux("new-session", "-d", "-s", TMUX, "-x", "160", "-y", "50",
         f"env -u LIBVIRT_DEFAULT_URI {cmd}; echo VIRTMIX-EXIT=$?; sleep 600")
    wait_for(lambda: "Escape character is ^]" in screen(), 15, "the console banner")

    def prompt() -> bool:  # agetty prints it again on every Enter
        tmux("send-keys", "-t", TMUX, "Enter")
        return f"{name} login:" in screen()

    wait_for(prompt, 60, "the login prompt on the console", interval=1.0)
    tmux("send-keys", "-t", TMUX, "root", "Enter")
    wait_for(lambda: "Password:" in screen(), 15, "the password prompt")
    tmux("send-keys", "-t", TMUX, "-l", "--", password)
    tmux("send-keys", "-t", TMUX, "Enter")
    shell_prompt = shell_prompt or f"root@{name}:~#"
    wait_for(lambda: shell_prompt in screen(), 30, "a root shell after login")
    tmux("send-keys", "-t", TMUX, "-l", "--", "echo seed-$((6*7)) $(cat /etc/hostname)")
    tmux("send-keys", "-t", TMUX, "Enter")
    wait_for(lambda: f"seed-42 {name}" in screen(), 15, "the command's output")
    tmux("send-keys", "-t", TMUX, "C-]")
    wait_for(lambda: "VIRTMIX-EXIT=0" in screen(), 15, "virtmix leaving the console")
    return screen()


def test_seed_workflow_end_to_end(storage: Storage):
    name = PFX + "vm0"
    t0 = time.monotonic()
    made = create(name, "--ssh-key-text", KEY, "--root-password", "generate")
    create_s = time.monotonic() - t0
    print(f"create from {'cache' if create_s < 10 else 'an empty cache'}: {create_s:.1f}s")
    assert "root filesystem: done in" in made.stderr  # one line per step without a tty
    shown, pw_file, password = PASSWORD_RE.search(made.stdout).groups()
    assert shown == name and len(password) >= 16
    assert stat.S_IMODE(os.stat(pw_file).st_mode) == 0o600
    log = Path(re.search(r"log:\s+(\S+)", made.stdout).group(1))
    xml = virsh(LXC, "dumpxml", "--inactive", name)
    assert "created-by=\"create\"" in xml or "created-by='create'" in xml
    for where, text in (("log", log.read_text()), ("domain XML", xml),
                        ("state", (storage.container_dir(name) / "state.json").read_text())):
        assert password not in text, f"the password is in the {where}"
    tree = storage.container_dir(name) / "rootfs"
    assert KEY in (tree / "root/.ssh/authorized_keys").read_text()

    info = vm("info", name).stdout
    assert re.search(r"^clone:\s+overlay$", info, re.M), info
    assert re.search(r"^base:\s+debian-bookworm-minbase-\S+-u100000$", info, re.M), info
    assert re.search(r"^tree:\s+unprivileged", info, re.M), info

    vm("start", name)
    assert domstate(LXC, name) == "running"
    console_login(name, password)
    assert domstate(LXC, name) == "running"  # leaving the console does not stop it

    wait_for(lambda: lxc_run(name, ["systemctl", "is-system-running"]).stdout.strip()
             in ("running", "degraded"), 60, "systemd up")
    ps = vm("attach", name, "--", "ps", "aux").stdout
    pid1 = next(ln for ln in ps.splitlines()[1:] if ln.split()[1] == "1")
    assert pid1.endswith("/sbin/init")  # systemd-sysv's init is systemd
    assert "/lib/systemd/systemd-journald" in ps

    vm("stop", name)
    assert domstate(LXC, name) == "shut off"
    gone = vm("destroy", name, "--yes").stdout
    assert f"{name}: removed, deleted {storage.container_dir(name)}" in gone
    assert name not in virsh(LXC, "list", "--all", "--name").split()
    assert not storage.container_dir(name).exists()
    assert mounted_below(storage.container_dir(name)) == []


def test_existing_name_exits_9_and_changes_nothing(storage: Storage):
    name = PFX + "dup"
    quiet = vm("-q", "create", name, "--storage", str(STORAGE), timeout=900)
    assert (quiet.stdout, quiet.stderr) == ("", "")  # --quiet: no progress, no summary
    xml = virsh(LXC, "dumpxml", "--inactive", name)
    state = (storage.container_dir(name) / "state.json").read_text()
    logs = sorted((storage.root / "logs").iterdir())
    again = create(name, "--memory", "128MiB", "--root-password", "generate", check=9)
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert virsh(LXC, "dumpxml", "--inactive", name) == xml
    assert (storage.container_dir(name) / "state.json").read_text() == state
    assert not (storage.container_dir(name) / "root-password").exists()
    assert sorted((storage.root / "logs").iterdir()) == logs


def test_root_is_locked_without_password_and_start_remounts_the_overlay(storage: Storage):
    name = PFX + "lock"
    made = create(name)
    assert "locked and has no ssh key" in made.stderr and "--ssh-key" in made.stderr
    tree = storage.container_dir(name) / "rootfs"
    root_entry = next(ln for ln in (tree / "etc/shadow").read_text().splitlines()
                      if ln.startswith("root:"))
    field = root_entry.split(":")[1]
    assert field and field[0] in "!*", f"root is not locked: {root_entry!r}"
    # A host reboot loses the overlay mount: start must mount it again before libvirt runs.
    subprocess.run(["umount", str(tree)], check=True)
    assert str(tree) not in mounted_below(tree)
    vm("start", name)
    assert str(tree) in mounted_below(tree)
    wait_for(lambda: lxc_run(name, ["systemctl", "is-system-running"]).stdout.strip()
             in ("running", "degraded"), 60, "systemd up after the remount")
    vm("destroy", name, "--yes")
    assert not storage.container_dir(name).exists()


def test_start_failure_still_shows_the_password_once(storage: Storage, tmp_path: Path):
    # An isolated network, defined but never started: the container cannot start on it.
    net = tmp_path / "net.xml"
    net.write_text(f"<network><name>{PFX}net</name><bridge name='vmixtcr0'/></network>")
    virsh(LXC, "net-define", str(net))
    name = PFX + "nostart"
    made = create(name, "--network", PFX + "net", "--root-password", "generate", "--start",
                  check=8)  # libvirt: "network is not active" (operation invalid: state)
    assert PASSWORD_RE.search(made.stdout), made.stdout  # shown although start failed
    assert "is created; fix the cause" in made.stderr
    assert domstate(LXC, name) == "shut off"
    vm("destroy", name, "--yes")
    assert not storage.container_dir(name).exists()


def test_busybox_template_workflow(storage: Storage):
    name = PFX + "bb"
    made = create(name, "--template", "busybox", "--root-password", "generate", "--start")
    _shown, _file, password = PASSWORD_RE.search(made.stdout).groups()
    info = vm("info", name).stdout
    assert re.search(r"^base:\s+busybox-static$", info, re.M), info
    assert re.search(r"^tree:\s+unprivileged", info, re.M), info
    tree = storage.container_dir(name) / "rootfs"
    assert tree.stat().st_uid == 100000  # shifted for the <idmap>
    console_login(name, password, shell_prompt="~ # ")
    ps = vm("attach", name, "--", "ps").stdout
    assert re.search(r"^\s*1 root\s+init$", ps, re.M), ps
    assert "/bin/login -- root" in ps  # the console getty became the login session
    vm("stop", name)  # SIGPWR: busybox init halts
    assert domstate(LXC, name) == "shut off"
    vm("destroy", name, "--yes")
    assert not storage.container_dir(name).exists()
