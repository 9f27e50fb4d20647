"""A second inventory host reached through libvirt's ssh transport on loopback.

The test runs its own sshd (own config, host key and authorized key, a spare port on
127.0.0.1) and checks the host key against a known_hosts file it writes: libvirt's `ssh`
transport runs the ssh binary named by the URI's `command=` parameter (known_hosts= is
honoured by the libssh/libssh2 transports only), so a small wrapper passes
UserKnownHostsFile and StrictHostKeyChecking=yes. Root's own ~/.ssh is never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apply_helpers import (
    PFX,
    busybox,
    lxc_host,
    make_storage_dir,
    names_with_prefix,
    remove_storage_dir,
    virtmix,
    write_inventory,
)
from support import wait_for

from virtmix.util.identity import domain_uuid

pytestmark = pytest.mark.live


@dataclass(frozen=True)
class LoopbackSsh:
    port: int
    key: Path
    wrapper: Path
    bad_wrapper: Path  # checks against a known_hosts with another host's key

    def uri(self, wrapper: Path | None = None) -> str:
        return (f"lxc+ssh://root@127.0.0.1:{self.port}/system?command={wrapper or self.wrapper}"
                f"&keyfile={self.key}&no_tty=1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmixt-apply",
                    "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _wrapper(path: Path, known_hosts: Path) -> Path:
    path.write_text("#!/bin/sh\n# libvirt runs this as its ssh binary (URI command=).\n"
                    f"exec ssh -o UserKnownHostsFile={known_hosts} "
                    "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                    "-o BatchMode=yes \"$@\"\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def loopback_ssh() -> Iterator[LoopbackSsh]:
    d = Path(tempfile.mkdtemp(prefix=PFX + "ssh-", dir="/var/tmp"))
    port = _free_port()
    host_pub = _keygen(d / "host_key")
    (d / "authorized_keys").write_text(_keygen(d / "client_key") + "\n")
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    other_pub = _keygen(d / "other_key")
    (d / "bad_known_hosts").write_text(f"[127.0.0.1]:{port} {other_pub}\n")
    # StrictModes would refuse authorized_keys below the world-writable /var/tmp.
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {d}/sshd.pid\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = open(d / "sshd.log", "w")  # noqa: SIM115 - closed in finally
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close()
                 or True, timeout=10, what=f"sshd on 127.0.0.1:{port}")
        yield LoopbackSsh(port, d / "client_key", _wrapper(d / "ssh", d / "known_hosts"),
                          _wrapper(d / "ssh-bad", d / "bad_known_hosts"))
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX + "ssh")
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_second_host_over_ssh(lxc_conn, storage, loopback_ssh, busybox_tree):
    local, remote = PFX + "ssh-local", PFX + "ssh-remote"
    uri = loopback_ssh.uri()
    # busybox's init never reads /dev/initctl, where libvirt's shutdown writes its request:
    # destroy must still stop it cleanly without seeing the init behind the ssh URI
    ct = busybox(busybox_tree)
    hosts = {"h1": lxc_host({local: busybox(busybox_tree)}),
             "h2": {"uri": uri, "lxc_uri": uri, "containers": {remote: ct}}}
    inv = str(write_inventory(storage, hosts))
    res = virtmix("plan", inv, "--allow-uri-commands", check=10)
    assert f"+ container {remote} on h2 ({uri}): create" in res.stdout
    virtmix("apply", inv, "--yes", "--allow-uri-commands", check=0)
    assert names_with_prefix(lxc_conn, PFX + "ssh") == [local, remote]
    assert lxc_conn.lookupByName(remote).isActive()
    assert lxc_conn.lookupByName(remote).UUIDString() == domain_uuid(uri, remote)
    res = virtmix("plan", inv, "--allow-uri-commands", check=0)
    assert "nothing to do (2 up to date)" in res.stdout

    # The host key is checked: the same host with the wrong known key is refused.
    bad = loopback_ssh.uri(loopback_ssh.bad_wrapper)
    hosts["h2"] = {"uri": bad, "lxc_uri": bad, "containers": {remote: ct}}
    bad_inv = str(write_inventory(storage, hosts, file="bad.yaml"))
    res = virtmix("plan", bad_inv, "--allow-uri-commands", check=5)
    assert f"could not read {bad}" in res.stderr and "Host key verification failed" in res.stderr

    res = virtmix("destroy", inv, "--yes", "--allow-uri-commands", check=0)
    assert "forced off" not in res.stdout + res.stderr
    assert names_with_prefix(lxc_conn, PFX + "ssh") == []
