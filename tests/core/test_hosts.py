"""Host facts: the one local-URI check, init pids (never 0), cpuset writes, polling."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from virtmix.errors import StateError
from virtmix.hosts import Host, cgroup_version_where, host_for, is_local, shares_are_weights
from virtmix.hosts import local as local_host
from virtmix.hosts import ssh as ssh_host
from virtmix.hosts.cgroupfs import write_cpuset_tree
from virtmix.hosts.local import LocalHost
from virtmix.hosts.ssh import SshHost
from virtmix.util.polling import poll, wait_until


@pytest.mark.parametrize("uri, local", [
    ("LXC:///system", True), ("lxc:///", True), ("Qemu+Unix:///system", True),
    ("lxc+ssh://root@127.0.0.1/system", False), ("LXC+SSH://h/system", False),
    ("lxc+libssh2://h/system", False), ("qemu+tcp://h/system", False),
    ("qemu://h/system", False),
])
def test_one_local_uri_check(uri, local):
    assert is_local(uri) is local


def test_host_for_picks_the_machine_and_both_satisfy_the_protocol():
    assert isinstance(host_for("lxc:///system"), LocalHost)
    assert isinstance(host_for("lxc+ssh://root@10.0.0.5/system"), SshHost)
    assert isinstance(host_for("lxc:///system"), Host)
    assert isinstance(host_for("lxc+ssh://root@10.0.0.5/system"), Host)


def test_shares_are_weights_nested_always_declared_first():
    assert shares_are_weights("lxc+ssh://root@10.0.0.5/system", "g1")
    assert not shares_are_weights("lxc+ssh://root@10.0.0.5/system", None)
    assert cgroup_version_where("lxc:///system", None, declared="v2") == "v2"
    assert cgroup_version_where("qemu+tcp://h/system", None) == "v1"


def _parent_with_one_child() -> tuple[subprocess.Popen[bytes], int]:
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    kids = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    found = poll(lambda: (kids.read_text().split() or [None])[0], timeout=2, interval=0.02)
    assert found is not None
    return parent, int(found)


def test_local_init_pid_never_zero_falls_back_to_the_controllers_child(tmp_path, monkeypatch):
    """libvirt's status file says <init pid='0'/> right after a start ("Init process ID is
    not yet known"): the controller's only child is the init, never pid 0."""
    monkeypatch.setattr(local_host, "LXC_STATE_DIR", tmp_path)
    (tmp_path / "ct.xml").write_text("<domstatus><init pid='0'/></domstatus>")
    parent, child = _parent_with_one_child()
    try:
        assert local_host.init_pid("ct", parent.pid) == child
    finally:
        parent.kill()
        parent.wait()
    with pytest.raises(StateError, match="cannot find the init process"):
        local_host.init_pid("ct", None, wait=0.2)


def test_local_init_pid_waits_for_the_status_file(tmp_path, monkeypatch):
    monkeypatch.setattr(local_host, "LXC_STATE_DIR", tmp_path)
    status = tmp_path / "ct.xml"
    status.write_text("<domstatus><init pid='0'/></domstatus>")
    later = threading.Timer(0.3, lambda: status.write_text("<init pid='4242'/>"))
    later.start()
    try:
        assert local_host.init_pid("ct", None, wait=5) == 4242
    finally:
        later.cancel()


def test_ssh_init_pid_never_zero(tmp_path, monkeypatch):
    """The ssh host's shell, run here by sh instead of ssh: pid 0 in the status file is
    passed over for the controller's child, and no init at all is a StateError."""
    (tmp_path / "ct.xml").write_text("<domstatus><init pid='0'/></domstatus>")
    monkeypatch.setattr(ssh_host, "ssh_argv", lambda uri, tty=False: ["sh", "-c"])
    real_sh = ssh_host.init_pid_sh
    monkeypatch.setattr(ssh_host, "init_pid_sh",
                        lambda n, c=None: real_sh(n, c, state_dir=str(tmp_path)))
    monkeypatch.setattr(ssh_host, "INIT_WAIT", 0.3)
    host = SshHost("lxc+ssh://root@10.0.0.5/system")
    parent, child = _parent_with_one_child()
    try:
        assert host.init_pid("ct", parent.pid) == child
    finally:
        parent.kill()
        parent.wait()
    with pytest.raises(StateError, match="cannot find the init process"):
        host.init_pid("ct", None)


def test_cpuset_tree_widens_then_narrows(tmp_path):
    top, child = tmp_path / "ct", tmp_path / "ct" / "inner"
    child.mkdir(parents=True)
    (top / "cpuset.cpus").write_text("0\n")
    (child / "cpuset.cpus").write_text("0\n")
    (tmp_path / "ct" / "empty").mkdir()
    (top / "empty" / "cpuset.cpus").write_text("\n")  # v2: inherits, stays empty until set
    written = write_cpuset_tree(top, frozenset({1}))
    assert [p.read_text() for p in written] == ["1\n", "1\n", "1\n"]


def test_polling_returns_the_first_result_and_gives_up():
    calls = iter([None, None, 7])
    assert poll(lambda: next(calls), timeout=2, interval=0.01) == 7
    began = time.monotonic()
    assert not wait_until(lambda: False, timeout=0.2, interval=0.05)
    assert 0.15 < time.monotonic() - began < 1.5
    stop = threading.Event()
    stop.set()
    assert poll(lambda: None, timeout=10, stop=stop) is None


def test_ssh_cgroup_dir_stops_when_the_process_is_gone():
    """Nothing runs on /sys/fs/cgroup itself (the guest's root cgroup) for a pid that
    vanished: the script stops at the lookup."""
    from virtmix.hosts.ssh import cgroup_dir_sh

    gone = subprocess.run(["sh", "-c", cgroup_dir_sh(2**22 + 12345, quiet=True) + "echo $d"],
                          capture_output=True, text=True)
    assert gone.returncode != 0 and gone.stdout == ""
    mine = subprocess.run(["sh", "-c", "id=$$; " + cgroup_dir_sh("$id") + "echo $d"],
                          capture_output=True, text=True)
    assert mine.returncode == 0 and mine.stdout.startswith("/sys/fs/cgroup")
    with pytest.raises(ValueError):
        cgroup_dir_sh("1; rm -rf /")


def test_local_init_pid_of_a_container_that_does_not_run_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(local_host, "LXC_STATE_DIR", tmp_path)  # no status file: not running
    began = time.monotonic()
    with pytest.raises(StateError, match="is it running"):
        local_host.init_pid("ct", None)  # default wait: only for a container that starts
    assert time.monotonic() - began < 1


def test_a_process_that_ended_has_no_cpuset_and_is_no_error():
    """A container that stops while a host is observed (plan, apply, ls) must not make the
    whole host unreadable: a parallel suite saw `apply` call lxc:///system unreachable when
    another module's container stopped between the listing and its cgroup read."""
    from virtmix.errors import BackendError
    from virtmix.hosts.cgroupfs import cgroup_dirs, read_cpuset

    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: /proc/PID is gone
    with pytest.raises(BackendError):
        cgroup_dirs(proc.pid)  # callers that act on a process still say it is gone
    assert read_cpuset(proc.pid) is None
    assert LocalHost().read_cpuset(proc.pid) is None


def test_local_cgroup_root_holds_every_hierarchy_of_this_process():
    from virtmix.hosts.cgroupfs import cgroup_dirs

    root = LocalHost().cgroup_root()
    dirs = cgroup_dirs(os.getpid())
    assert dirs and all(str(d).startswith(root.rstrip("/") + "/") or str(d) == root
                        for d in dirs.values()), (root, dirs)
    assert SshHost("lxc+ssh://root@10.0.0.5/system").cgroup_root() == "/sys/fs/cgroup"
