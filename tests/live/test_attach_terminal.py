"""attach/execute never hand the admin's terminal to a container, and Ctrl-C reaches the command.

virtmix runs here as an admin would: on a pseudo-terminal that is its controlling terminal
(the "caller's terminal"). Inside, a command compares its fds and /dev/tty with that
terminal's device numbers and tries TIOCSTI on fds 0, 1 and 2 and on /dev/tty; nothing may
reach the caller's input queue. The container shares the host's root (as `execute` without
--rootfs does), so the command can be python3.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import subprocess
import tempfile
import termios
import time
from pathlib import Path

import pytest
from admin_helpers import LXC, PFX, _env, assert_clean_error, virsh, virtmix_argv, vm
from support import busybox_lxc_xml, wait_for

from virtmix.admin.execute import execute_xml, find_static_busybox

pytestmark = pytest.mark.live

CT_PFX = PFX + "term-"
HOSTROOT = CT_PFX + "host"
BUSYBOX = CT_PFX + "bb"

PROBE = r"""
import fcntl, os, termios
def dev(fd):
    st = os.fstat(fd)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if st.st_rdev else "-"
for fd in (0, 1, 2):
    print(f"fd{fd}", dev(fd), os.isatty(fd), os.readlink(f"/proc/self/fd/{fd}"), flush=True)
try:
    t = os.open("/dev/tty", os.O_RDWR)
    print("devtty", dev(t), flush=True)
except OSError as e:
    t = None
    print("devtty none", e.errno, flush=True)
for fd in [0, 1, 2] + ([t] if t is not None else []):
    try:
        for c in b"echo INJECTED\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        print("tiocsti", fd, "ok", flush=True)
    except OSError as e:
        print("tiocsti", fd, "refused", e.errno, flush=True)
"""


@pytest.fixture(scope="module")
def hostroot(lxc_conn) -> str:
    """A running container whose root is the host's (python3 inside), defined with virsh."""
    from support import cleanup_domains

    cleanup_domains(lxc_conn, CT_PFX)
    helper = tempfile.mkdtemp(prefix="vmixt-term-")
    os.chmod(helper, 0o755)
    shutil.copy2(find_static_busybox(), os.path.join(helper, "busybox"))
    xml = Path(helper) / "d.xml"
    xml.write_text(execute_xml(HOSTROOT, None, helper, 262144))
    virsh(LXC, "define", str(xml))
    virsh(LXC, "start", HOSTROOT)
    yield HOSTROOT
    cleanup_domains(lxc_conn, CT_PFX)
    shutil.rmtree(helper, ignore_errors=True)


class Terminal:
    """A pty whose slave is the controlling terminal of the process run on it."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.rdev = os.fstat(self.slave).st_rdev
        self.out = b""

    def run(self, argv: list[str], *, stdin: int | None = None) -> subprocess.Popen:
        slave = self.slave

        def ctty() -> None:  # after setsid (start_new_session)
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        return subprocess.Popen(argv, stdin=slave if stdin is None else stdin, stdout=slave,
                                stderr=slave, start_new_session=True, preexec_fn=ctty,
                                env=_env())

    def read(self, timeout: float = 0.2) -> bytes:
        while select.select([self.master], [], [], timeout)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                break
            if not data:
                break
            self.out += data
            timeout = 0.05
        return self.out

    def wait_for(self, text: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.read():
            assert time.monotonic() < deadline, f"{text!r} not seen in {self.out!r}"

    def finish(self, proc: subprocess.Popen, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            self.read()
            assert time.monotonic() < deadline, f"still running; output {self.out!r}"
        self.read()
        return proc.returncode

    def pending_input(self) -> bytes:
        """What sits in this terminal's input queue (what its shell would read next)."""
        attrs = termios.tcgetattr(self.slave)
        attrs[3] &= ~termios.ICANON  # make incomplete lines readable too
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        os.set_blocking(self.slave, False)
        try:
            return os.read(self.slave, 65536)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def _probe_lines(out: bytes) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for raw in out.decode(errors="replace").replace("\r", "").splitlines():
        key, _, rest = raw.partition(" ")
        if key in ("fd0", "fd1", "fd2", "devtty", "tiocsti"):
            lines.setdefault(key, []).append(rest)
    return lines


def test_the_check_sees_an_injection_into_the_callers_terminal():
    """The test's own instrument works: TIOCSTI on the caller's terminal is seen."""
    term = Terminal()
    try:
        for c in b"echo INJECTED\n":
            fcntl.ioctl(term.slave, termios.TIOCSTI, bytes([c]))
        assert b"INJECTED" in term.pending_input()
    finally:
        term.close()


def _assert_not_the_callers(term: Terminal, out: bytes) -> dict[str, list[str]]:
    probe = _probe_lines(out)
    assert set(probe) >= {"fd0", "fd1", "fd2", "devtty", "tiocsti"}, out
    caller = f"{os.major(term.rdev)}:{os.minor(term.rdev)}"
    for key in ("fd0", "fd1", "fd2", "devtty"):
        assert all(caller not in line.split() for line in probe[key]), (key, caller, out)
    assert b"INJECTED" not in term.pending_input(), "TIOCSTI reached the caller's terminal"
    return probe


@pytest.mark.parametrize("verb", ["attach", "execute"])
def test_a_command_on_a_terminal_gets_a_terminal_of_its_own(hostroot, verb):
    term = Terminal()
    try:
        args = ["attach", hostroot] if verb == "attach" else ["execute", "--name",
                                                             CT_PFX + "exec"]
        proc = term.run(virtmix_argv(*args, "--", "python3", "-c", PROBE))
        assert term.finish(proc) == 0, term.out
        probe = _assert_not_the_callers(term, term.out)
        # It did get a terminal (a pty of its own, relayed): a shell inside is interactive.
        assert all(line.split()[1] == "True" for line in probe["fd0"] + probe["fd1"]), probe
        assert probe["devtty"][0].split()[0] != "none", probe
    finally:
        term.close()


def test_a_piped_command_gets_no_terminal_at_all(hostroot):
    """`echo | virtmix attach` in a terminal: stdout is the terminal, the command gets pipes
    and no controlling terminal."""
    term = Terminal()
    try:
        proc = term.run(virtmix_argv("attach", hostroot, "--", "python3", "-c", PROBE),
                        stdin=subprocess.DEVNULL)
        assert term.finish(proc) == 0, term.out
        probe = _assert_not_the_callers(term, term.out)
        assert all(line.split()[1] == "False" for line in probe["fd1"] + probe["fd2"]), probe
        assert probe["devtty"][0].startswith("none"), probe  # no controlling terminal
        assert all("refused" in line for line in probe["tiocsti"]), probe
    finally:
        term.close()


# -- Ctrl-C ---------------------------------------------------------------------------------
SLOW = ["sh", "-c", "echo started; sleep 9; echo done"]


def wait_sleeping() -> None:
    """Until the container's `sleep 9` runs (visible in the host's /proc): a SIGINT that
    reached sh before it forked would be caught and deferred by the shell, as anywhere."""
    def sleeping() -> bool:
        for d in os.listdir("/proc"):
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == b"sleep\09\0":
                        return True
            except OSError:
                continue
        return False

    deadline = time.monotonic() + 3
    while not sleeping() and time.monotonic() < deadline:  # busybox may sleep in-process
        time.sleep(0.02)


@pytest.fixture(scope="module")
def busybox_ct(lxc_conn, busybox_tree, hostroot, tmp_path_factory) -> str:
    xml = tmp_path_factory.mktemp("term") / "d.xml"
    xml.write_text(busybox_lxc_xml(BUSYBOX, busybox_tree))
    virsh(LXC, "define", str(xml))
    virsh(LXC, "start", BUSYBOX)
    from support import lxc_run

    wait_for(lambda: lxc_run(BUSYBOX, ["test", "-e", "/run/virtmix-init-done"]).returncode
             == 0, 10, "busybox init")
    return BUSYBOX


@pytest.mark.parametrize("verb", ["attach", "execute"])
def test_ctrl_c_on_the_terminal_reaches_the_command(busybox_ct, verb):
    term = Terminal()
    try:
        args = ["attach", busybox_ct] if verb == "attach" else ["execute"]
        proc = term.run(virtmix_argv(*args, "--", *SLOW))
        term.wait_for(b"started")
        wait_sleeping()
        t0 = time.monotonic()
        os.write(term.master, b"\x03")  # Ctrl-C typed by the admin
        assert term.finish(proc, timeout=6) == 130, term.out
        assert time.monotonic() - t0 < 5
        assert b"done" not in term.out
    finally:
        term.close()


@pytest.mark.parametrize("verb", ["attach", "execute"])
def test_sigint_to_virtmix_process_group_reaches_the_command(busybox_ct, verb):
    args = ["attach", busybox_ct] if verb == "attach" else ["execute"]
    proc = subprocess.Popen(virtmix_argv(*args, "--", *SLOW), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=_env())
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    wait_sleeping()
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=6)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 5
    assert b"done" not in out
    assert not [n for n in virsh(LXC, "list", "--all", "--name").split()
                if n.startswith("virtmix-exec-")]  # execute's container is gone


# -- messages -------------------------------------------------------------------------------
def test_a_missing_command_is_reported_in_virtmix_words(busybox_ct):
    assert_clean_error(vm("attach", busybox_ct, "--", "nosuchcmd", check=None), 127,
                       f"nosuchcmd: command not found in {busybox_ct}")
    proc = vm("attach", busybox_ct, "--", "/etc/passwd", check=None)
    assert_clean_error(proc, 126, f"/etc/passwd: not executable in {busybox_ct}")
    name = CT_PFX + "exec-missing"
    proc = vm("execute", "--name", name, "--", "nosuchcmd", check=None)
    assert_clean_error(proc, 127, f"nosuchcmd: command not found in {name}")
    assert "nsenter" not in proc.stderr
    assert name not in virsh(LXC, "list", "--all", "--name")
