"""How virtmix reaches a guest's libvirt: its ssh wrapper, pinned keys, the URI routing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from virtmix.backend import open_connection, register_transport
from virtmix.errors import BackendError
from virtmix.hosts.ssh import init_pid_sh as _init_pid_sh
from virtmix.images import keys
from virtmix.nesting.guests import guest_wait_seconds, wait_for_guest_libvirt
from virtmix.rootfs.storage import Storage


@pytest.fixture
def storage(tmp_path):
    return Storage(tmp_path / "storage")


def test_transport_uri_points_libvirt_at_virtmix_ssh(storage):
    uri = keys.transport_uri(storage, "lxc+ssh://root@10.0.0.5/system")
    wrapper = storage.root / "ssh" / "ssh"
    assert uri == f"lxc+ssh://root@10.0.0.5/system?command={wrapper}&no_tty=1"
    conf = (storage.root / "ssh" / "config").read_text()
    assert "StrictHostKeyChecking yes" in conf and "BatchMode yes" in conf
    assert f"UserKnownHostsFile {storage.root}/ssh/known_hosts" in conf
    assert "GlobalKnownHostsFile /dev/null" in conf
    assert wrapper.read_text().startswith("#!/bin/sh\nexec ssh -F ")
    assert (storage.root / "ssh" / "id_ed25519").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("uri", [
    "lxc:///system", "qemu+tls://h/system",
    "lxc+ssh://root@h/system?keyfile=/k",          # the admin's own ssh setup wins
    "lxc+ssh://root@h/system?command=/usr/bin/ssh",
])
def test_transport_uri_leaves_other_uris_alone(storage, uri):
    assert keys.transport_uri(storage, uri) == uri


def test_pins_replace_older_keys_of_the_same_address(storage):
    storage.ensure()
    a = keys.make_host_key(storage.root / "a", "g1")
    b = keys.make_host_key(storage.root / "b", "g1")
    keys.pin_host_key(storage, "10.0.0.5", a)
    keys.pin_host_key(storage, "10.0.0.6", a)
    keys.pin_host_key(storage, "10.0.0.5", b)
    lines = keys.known_hosts(storage).read_text().splitlines()
    assert lines == [f"10.0.0.6 {' '.join(a.split()[:2])}", f"10.0.0.5 {' '.join(b.split()[:2])}"]
    keys.unpin_host_key(storage, "10.0.0.5")
    assert keys.known_hosts(storage).read_text().splitlines() == lines[:1]


def test_authorized_keys_has_site_key_and_admin_extras(storage):
    extra = keys.ssh_dir(storage) / keys.EXTRA_KEYS
    extra.write_text("# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExtra admin@desk\n")
    text = keys.authorized_keys(storage)
    site_pub = (storage.root / "ssh" / "id_ed25519.pub").read_text().strip()
    assert text.splitlines() == [site_pub, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExtra admin@desk"]


def test_registered_transport_opens_the_real_uri_and_keeps_the_inventory_one():
    register_transport("lxc+ssh://root@vmixt-nest-unit/system", lambda: "test:///default")
    conn = open_connection("lxc+ssh://root@vmixt-nest-unit/system")
    try:
        assert conn.uri == "lxc+ssh://root@vmixt-nest-unit/system"
        assert conn.driver == "test"
    finally:
        conn.close()


def test_loading_a_site_registers_its_guests(nested_site):
    from virtmix.backend import _TRANSPORTS

    uri = "lxc+ssh://root@10.213.99.10/system"
    assert uri in _TRANSPORTS
    assert _TRANSPORTS[uri]().startswith(uri + "?command=/var/tmp/vmixt-nest-unit-storage/ssh")


def test_wait_names_the_guest_and_its_containers(nested_site):
    # Port 1 on loopback refuses at once: libvirt's ssh transport fails, we give up at 0 s.
    uri = "lxc+ssh://root@127.0.0.1:1/system?command=/usr/bin/ssh&no_tty=1"
    with pytest.raises(BackendError) as exc:
        wait_for_guest_libvirt(nested_site, "g1", uri, timeout=0)
    msg = exc.value.message
    assert msg.startswith(f"guest g1: its libvirt did not answer within 0s at {uri}")
    assert msg.endswith("not applied: g1/db, g1/web")
    assert "serial.log" in exc.value.hint


def test_guest_wait_setting(monkeypatch):
    monkeypatch.setenv("VIRTMIX_GUEST_WAIT", "42")
    assert guest_wait_seconds() == 42
    monkeypatch.setenv("VIRTMIX_GUEST_WAIT", "soon")
    with pytest.raises(BackendError, match="VIRTMIX_GUEST_WAIT"):
        guest_wait_seconds()


@pytest.mark.parametrize("raw, essence", [
    ("cannot connect to libvirt at lxc+ssh://root@10.0.0.5/system?command=/s/ssh&no_tty=1: "
     "Cannot recv data: ssh: connect to host 10.0.0.5 port 22: No route to host: Connection "
     "reset by peer (check ssh access to that host and that libvirtd runs there)",
     "ssh: connect to host 10.0.0.5 port 22: No route to host"),
    ("cannot connect to libvirt at lxc+ssh://root@h/system: End of file while reading data: "
     "virt-ssh-helper: cannot connect to '/run/x': No such file or directory: Input/output "
     "error", "virt-ssh-helper: cannot connect to '/run/x': No such file or directory"),
    ("something else entirely", "something else entirely"),
])
def test_wait_message_keeps_what_ssh_said(raw, essence):
    from virtmix.nesting.guests import _essence

    assert _essence(raw) == essence


def _run_init_pid_sh(name: str, controller_pid: int | None) -> subprocess.CompletedProcess:
    script = _init_pid_sh(name, controller_pid) + 'echo "$pid"'
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True)


def test_remote_init_pid_falls_back_to_the_controllers_child():
    """Without a status file naming the init (a CI run saw one), the only child of the
    libvirt_lxc controller (the domain's ID) is the init; the same shell runs in the guest."""
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        kids = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        for _ in range(100):
            if kids.read_text().split():
                break
            time.sleep(0.02)
        child = int(kids.read_text().split()[0])
        found = _run_init_pid_sh("vmixt-no-such-container", parent.pid)
        assert found.returncode == 0 and found.stdout.strip() == str(child), found
    finally:
        parent.kill()
        parent.wait()
    # No status file and no controller: a clear error and exit 125, never an empty pid.
    missing = _run_init_pid_sh("vmixt-no-such-container", None)
    assert missing.returncode == 125
    assert "vmixt-no-such-container is not running there" in missing.stderr


def test_first_runs_at_once_make_one_site_key(storage):
    """Four processes asking for the site key of a fresh storage at the same moment (two
    first applies, or the suite on two workers): one pair is made, and it is whole."""
    code = ("import sys, time; from virtmix.images import keys; from virtmix.rootfs.storage "
            "import Storage; time.sleep(max(0, float(sys.argv[2]) - time.time())); "
            "print(keys.site_key(Storage(sys.argv[1])).read_text())")
    import sys
    at = str(time.time() + 2)  # all four ask at once, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", code, str(storage.root), at], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1
    key = storage.root / "ssh" / "id_ed25519"
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True).stdout.split()[:2]
    assert key.with_suffix(".pub").read_text().split()[:2] == derived
    assert sorted(p.name for p in key.parent.iterdir() if "id_ed25519" in p.name) == [
        "id_ed25519", "id_ed25519.pub"]
