"""`console` driven as a person would (tmux), and `execute` in temporary containers."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest
from admin_helpers import LXC, PFX, assert_clean_error, domstate, virsh, virtmix_argv, vm
from support import busybox_lxc_xml, lxc_run, wait_for

TMUX = "vmixt-admin-console"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def pane() -> str:
    return tmux("capture-pane", "-p", "-t", TMUX)


@pytest.fixture
def console_ct(lxc_conn, busybox_tree, domain_cleanup, tmp_path):
    name = PFX + "con"
    domain_cleanup(lxc_conn, name)
    (tmp_path / "d.xml").write_text(busybox_lxc_xml(name, busybox_tree))
    virsh(LXC, "define", str(tmp_path / "d.xml"))
    yield name
    subprocess.run(["tmux", "kill-session", "-t", TMUX], capture_output=True, check=False)


def test_console_line_echo_and_escape(console_ct):
    """start --console in a terminal, type a line, read its output, leave with Ctrl-]."""
    cmd = " ".join(shlex.quote(a) for a in virtmix_argv("start", "--console", console_ct))
    subprocess.run(["tmux", "kill-session", "-t", TMUX], capture_output=True, check=False)
    tmux("new-session", "-d", "-s", TMUX, "-x", "150", "-y", "40",
         f"env -u LIBVIRT_DEFAULT_URI {cmd}; echo VIRTMIX-EXIT=$?; sleep 600")
    wait_for(lambda: "Escape character is ^] (Ctrl + ])" in pane(), 15, "the console banner")
    # busybox init respawns a shell on the console; wait for its prompt.
    wait_for(lambda: lxc_run(console_ct, ["test", "-e", "/run/virtmix-init-done"])
             .returncode == 0, 10, "busybox init")
    time.sleep(0.5)
    tmux("send-keys", "-t", TMUX, "echo typed-$((6*7))", "Enter")
    wait_for(lambda: "typed-42" in pane().replace("typed-$((6*7))", ""), 10,
             "the command's output on the console")
    assert "echo typed-$((6*7))" in pane()  # the typed line is echoed back
    tmux("send-keys", "-t", TMUX, "C-]")
    wait_for(lambda: "VIRTMIX-EXIT=0" in pane(), 10, "virtmix to leave the console")
    assert f"left the console of {console_ct} (escape)" in pane()
    assert domstate(LXC, console_ct) == "running"  # leaving does not stop it


def test_execute_passes_the_exit_code_and_leaves_nothing(lxc_conn):
    name = PFX + "exec-a"
    proc = vm("execute", "--name", name, "--", "/bin/sh", "-c",
              "hostname; test -e /etc/debian_version && echo host-root; exit 7", check=7)
    assert proc.stdout.split() == [name, "host-root"]
    assert name not in virsh(LXC, "list", "--all", "--name")


def test_execute_in_a_given_rootfs(busybox_tree: Path):
    name = PFX + "exec-b"
    proc = vm("execute", "--rootfs", str(busybox_tree), "--name", name, "--",
              "/bin/sh", "-c", "cat /etc/hostname; ps | wc -l; ip -o link | wc -l", check=0)
    hostname, nprocs, links = proc.stdout.split()
    assert hostname == "virtmix-busybox"  # the tree's own file
    assert int(nprocs) <= 6  # its own PID namespace: header, init, sh, ps, wc
    assert links == "1"  # its own network namespace: only lo
    assert name not in virsh(LXC, "list", "--all", "--name")
    assert not (busybox_tree / "dev" / ".virtmix-exec").exists()


def test_execute_errors():
    assert_clean_error(vm("execute", "--rootfs", "/nonexistent", "--", "true", check=None),
                       2, "not a directory")
    proc = vm("execute", "--name", PFX + "exec-c", "--", "/no/such/command", check=None)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert PFX + "exec-c" not in virsh(LXC, "list", "--all", "--name")
