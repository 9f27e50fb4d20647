"""The relay that attach/execute run nsenter through, on plain host commands: exit codes as a
shell gives them, no controlling terminal, default signal handlers, signals passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from virtmix.admin.relay import run_relayed

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def test_exit_codes_and_signals_as_a_shell_reports_them():
    assert run_relayed(["sh", "-c", "exit 3"], ENV) == 3
    assert run_relayed(["sh", "-c", "kill -INT $$"], ENV) == 130
    assert run_relayed(["sh", "-c", "kill -TERM $$"], ENV) == 143


def test_the_child_has_no_controlling_terminal_and_default_sigint(tmp_path):
    out = tmp_path / "out"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a caller that ignores Ctrl-C
    try:
        code = run_relayed(["sh", "-c", f"(: </dev/tty) 2>/dev/null && echo tty >{out}; "
                                        f"grep SigIgn /proc/self/status >>{out}"], ENV)
    finally:
        signal.signal(signal.SIGINT, old)
    assert code == 0
    text = out.read_text()
    assert "tty" not in text.split()  # /dev/tty cannot be opened: no controlling terminal
    ignored = int(text.split()[-1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))  # SIGINT not inherited as ignored


def sleeping(argv1: bytes = b"9") -> bool:
    """True once a `sleep 9` runs: the shell has forked it (a SIGINT that reaches sh before
    that is caught and deferred by dash until sleep ends, as in any terminal)."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == b"sleep\0" + argv1 + b"\0":
                        return True
            except OSError:
                continue
    return False


def test_sigint_to_the_callers_process_group_ends_the_command_with_130():
    code = (
        "import sys; from virtmix.admin.relay import run_relayed;"
        "sys.exit(run_relayed(['sh', '-c', 'echo started; sleep 9; echo done'],"
        " {'PATH': '/usr/bin:/bin'}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ})
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    deadline = time.monotonic() + 5
    while not sleeping() and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=6)
    assert proc.returncode == 130 and b"done" not in out
    assert time.monotonic() - t0 < 5
