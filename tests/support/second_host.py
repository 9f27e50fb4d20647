"""A second real libvirt host on this one machine, for migrations and moves between hosts.

libvirt refuses to migrate a domain to the host it runs on: the migration cookie carries the
host's UUID and hostname and both must differ. So the second host is a second libvirtd (the
same binary, the real QEMU driver) in namespaces of its own (`unshare`):

- mount: private /run, /etc/libvirt (a libvirtd.conf with another `host_uuid`, a qemu.conf
  with `stdio_handler = "file"`: no virtlogd, and `cgroup_controllers = []`: two daemons on
  one cgroup v1 tree would name their domains' groups alike, `machine/qemu-ID-NAME...`, with
  IDs counted per daemon), /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, and any
  directory the caller names (a virtmix storage dir: the guest's disks must be files of
  their own there, as on another machine);
- UTS: its own hostname; pid: its own init (this file run as a script), so killing that one
  process ends everything the daemon started there (qemu included), even after a crash.

The network namespace is the machine's: migration data goes over loopback (the target host's
`migration_address: 127.0.0.1`), and a bridge made here is a bridge there too. The host is
reached the way a real remote one is, over ssh (an sshd of its own in the namespaces, on a
loopback port, with its own keys): `qemu+ssh://root@127.0.0.1:PORT/system?command=...`, so
virtmix copies files to it with rsync over ssh as it would to another machine. Its unix
socket is reachable too (`unix_uri`), for tests that look at it directly.

Each bound directory lives under `root` on this machine: `here(path)` names the file that a
path there is. `stop()` (also at exit of `second_host()`) kills its init and removes `root`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Directories of the daemon that are the second host's own (its state, config, logs).
LIBVIRT_DIRS = ("/run", "/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
                "/var/log/libvirt")
START_WAIT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dirname(path: str) -> str:
    return path.strip("/").replace("/", "-") or "root"


@dataclass
class SecondHost:
    hostname: str
    root: Path                       # on this machine: everything of the second host
    port: int                        # its sshd, on 127.0.0.1
    proc: subprocess.Popen[bytes]    # `unshare`, whose child is the namespaces' init
    binds: dict[str, Path] = field(default_factory=dict)  # path there -> dir here

    @property
    def ssh_uri(self) -> str:
        ssh = self.root / "ssh"
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system"
                f"?command={ssh / 'ssh'}&keyfile={ssh / 'id'}")

    @property
    def unix_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.root / 'run/libvirt/libvirt-sock'}"

    def here(self, path: str | Path) -> Path:
        """The file on this machine that `path` is on the second host (a bound dir)."""
        p = str(path)
        for there, mine in sorted(self.binds.items(), key=lambda kv: -len(kv[0])):
            if p == there or p.startswith(there.rstrip("/") + "/"):
                return mine / os.path.relpath(p, there)
        raise ValueError(f"{p} is this machine's file on the second host too (not bound)")

    def init_pid(self) -> int | None:
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        return int(kids.split()[0]) if kids.split() else None

    def log(self) -> str:
        parts = []
        for name in ("libvirtd.log", "sshd.log", "init.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}\n" + (self.root / name).read_text()[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Kill the namespaces' init (the kernel then kills all else in its pid namespace:
        the daemon, sshd, any qemu) and remove root. Safe to call twice."""
        pid = self.init_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pid = self.init_pid()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _configure(root: Path, hostname: str, port: int) -> None:
    """Write the second host's libvirt config and ssh keys under root."""
    etc = root / "etc-libvirt"
    etc.mkdir(parents=True)
    (etc / "libvirtd.conf").write_text(
        f'host_uuid = "{uuid.uuid4()}"\n'
        'log_outputs = "3:stderr"\n'
        # no TCP/TLS listeners: reached over ssh (virt-ssh-helper) and its unix socket
        'unix_sock_group = "root"\n')
    # The machine's qemu.conf, less the keys set here (libvirt's parser takes the first of
    # two settings of one key).
    own = {"user": '"root"', "group": '"root"', "stdio_handler": '"file"',
           "cgroup_controllers": "[ ]", "security_driver": '"none"'}
    base = Path("/etc/libvirt/qemu.conf")
    lines = base.read_text().splitlines() if base.is_file() else []
    kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in own]
    (etc / "qemu.conf").write_text(
        "\n".join(kept) + "\n# second host (tests/support/second_host.py)\n"
        + "".join(f"{k} = {v}\n" for k, v in own.items()))
    for name in ("run", "var-lib-libvirt", "var-cache-libvirt", "var-log-libvirt"):
        (root / name).mkdir()
    # The host's probe of the qemu binary is valid here too (same binaries): copying it
    # saves the first connection a few seconds of capability probing.
    caps = Path("/var/cache/libvirt/qemu/capabilities")
    if caps.is_dir():
        shutil.copytree(caps, root / "var-cache-libvirt/qemu/capabilities")
    ssh = root / "ssh"
    ssh.mkdir(mode=0o700)
    for key in ("host", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", hostname,
                        "-f", str(ssh / key)], check=True, stdin=subprocess.DEVNULL)
    (ssh / "authorized_keys").write_text((ssh / "id.pub").read_text())
    host_pub = (ssh / "host.pub").read_text().split()
    (ssh / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (ssh / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {ssh / 'host'}\n"
        f"AuthorizedKeysFile {ssh / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nLogLevel ERROR\n")
    wrapper = ssh / "ssh"
    wrapper.write_text("#!/bin/sh\n# the second host's ssh: its key and pinned host key\n"
                       f"exec ssh -o UserKnownHostsFile={ssh / 'known_hosts'} "
                       "-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR "
                       f"-i {ssh / 'id'} \"$@\"\n")
    wrapper.chmod(0o755)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies (a killed
    test run); unshare's --kill-child then ends the namespaces' init, so no second daemon
    outlives the run that made it."""
    import ctypes

    # SIGKILL: unshare ignores SIGTERM while it waits for its child.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_second_host(root: Path, hostname: str, private: tuple[str, ...] = ()) -> SecondHost:
    """Start the second host; `private` are directories (absolute paths) that it gets its
    own empty copies of (kept under root). Raises RuntimeError with its logs if it does not
    answer within START_WAIT seconds (and then leaves nothing running)."""
    root.mkdir(parents=True)
    port = _free_port()
    _configure(root, hostname, port)
    binds = {path: root / _dirname(path) for path in LIBVIRT_DIRS}
    for path in private:
        if not path.startswith("/") or path in binds:
            raise ValueError(f"private dir {path!r}: an absolute path not already bound")
        binds[path] = root / ("p-" + _dirname(path))
        binds[path].mkdir(parents=True)
    spec = {"hostname": hostname, "root": str(root),
            "binds": {k: str(v) for k, v in binds.items()}}
    with open(root / "init.log", "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--pid", "--kill-child=SIGTERM", "--mount-proc",
             "--propagation", "private", sys.executable, __file__, json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)
    host = SecondHost(hostname, root, port, proc, binds)
    try:
        _wait_up(host)
    except BaseException:
        logs = host.log()
        host.stop()
        raise RuntimeError(f"the second libvirt host did not come up:\n{logs}") from None
    return host


def _wait_up(host: SecondHost) -> None:
    deadline = time.monotonic() + START_WAIT
    while True:
        if host.proc.poll() is not None:
            raise RuntimeError("its init exited")
        ok = subprocess.run(["virsh", "-q", "-c", host.ssh_uri, "hostname"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=20)
        if ok.returncode == 0 and ok.stdout.strip() == host.hostname:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"virsh -c {host.ssh_uri} hostname: {ok.stderr.strip()}")
        time.sleep(0.2)


@contextlib.contextmanager
def second_host(root: Path, hostname: str, private: tuple[str, ...] = ()
                ) -> Iterator[SecondHost]:
    host = start_second_host(root, hostname, private)
    try:
        yield host
    finally:
        host.stop()


# -- the namespaces' init (this file run as a script by unshare) ---------------------------
def _init(spec: dict[str, object]) -> int:
    root = Path(str(spec["root"]))
    binds = spec["binds"]
    assert isinstance(binds, dict)
    for there, mine in binds.items():
        Path(there).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", mine, there], check=True)
    subprocess.run(["hostname", str(spec["hostname"])], check=True)
    for d in ("/run/libvirt", "/run/sshd", "/run/lock"):
        os.makedirs(d, exist_ok=True)
    kids = []
    with open(root / "libvirtd.log", "ab") as out:
        kids.append(subprocess.Popen(
            ["libvirtd", "-f", "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirtd.pid"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
    with open(root / "sshd.log", "ab") as out:
        kids.append(subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "ssh/sshd_config")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))

    def stop(_sig: int, _frame: object) -> None:
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                kid.terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(k.poll() is None for k in kids):
            time.sleep(0.05)
        os._exit(0)  # pid 1 of the namespace exits: the kernel kills all that is left

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:  # pid 1: reap whatever is orphaned here (qemu's helpers, sshd sessions)
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            time.sleep(0.5)
            continue
        if pid == kids[0].pid:
            print("libvirtd exited", flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(_init(json.loads(sys.argv[1])))
