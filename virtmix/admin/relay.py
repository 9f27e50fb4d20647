"""Run a command that enters a container without giving it the admin's terminal.

A process in a container that holds a file descriptor of the admin's terminal (or has it
as its controlling terminal, reachable through /dev/tty) can push keystrokes into the
admin's shell with TIOCSTI and have them run as root on the host (CVE-2016-9016/2017-5226,
what lxc-attach fixed by allocating a pseudo-terminal). So the child here always starts a
new session (no controlling terminal inherited), and:

- when stdin and stdout are terminals, it gets a new pseudo-terminal of its own as stdin,
  stdout (and stderr when that is a terminal too) and as controlling terminal; virtmix puts
  the admin's terminal in raw mode and copies bytes both ways, window size included. Ctrl-C
  is a byte like any other: the pty's line discipline turns it into SIGINT for the
  command's foreground process group.
- otherwise (pipes, files, tests) the child gets the same fds, except that any of them that
  is a terminal is replaced by a pipe that virtmix relays.

Signals sent to virtmix (Ctrl-C on a terminal in pipe mode, kill -INT of its process group,
SIGTERM, SIGHUP, SIGQUIT) are passed to the command's process group, whose handlers are the
defaults again (virtmix's SIG_IGN is not inherited). The result is the command's exit code,
128 + N when a signal N ended it, as a shell reports it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import subprocess
import termios
import threading
import tty
from collections.abc import Callable

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_CHILD_DEFAULTS = (*FORWARDED, signal.SIGPIPE, signal.SIGTSTP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD)


def _is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _child_setup(ctty: int | None, extra: Callable[[], None] | None) -> Callable[[], None]:
    def setup() -> None:
        for sig in _CHILD_DEFAULTS:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # no controlling terminal: /dev/tty no longer reaches the admin's
        if ctty is not None:
            fcntl.ioctl(ctty, termios.TIOCSCTTY, 0)
        if extra is not None:
            extra()
    return setup


class _Forwarder:
    """Signal handlers that pass signals on to the child's (foreground) process group.

    Installed before the child is spawned: a signal that arrives before it exists is kept
    and sent once it does (start()), so it can never end virtmix and orphan the command.
    """

    def __init__(self, pgrp: Callable[[], int | None]) -> None:
        self.pgrp = pgrp
        self.saved: dict[int, object] = {}
        self.seen: list[int] = []
        self.pending: list[int] = []

    def start(self) -> None:
        """The child exists now: send what arrived before."""
        pending, self.pending = self.pending, []
        for sig in pending:
            self._send(sig)

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED:
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig: int, _frame: object) -> None:
        self.seen.append(sig)
        self._send(sig)

    def _send(self, sig: int) -> None:
        pgrp = self.pgrp()
        if pgrp is None:
            self.pending.append(sig)
            return
        try:
            os.killpg(pgrp, sig)
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def _copy(src: int, dst: int, close_dst: bool) -> None:
    """Copy bytes src -> dst until EOF (a thread of the pipe mode)."""
    try:
        while True:
            try:
                data = os.read(src, 65536)
            except OSError:
                break
            if not data:
                break
            try:
                _write_all(dst, data)
            except OSError:
                break
    finally:
        if close_dst:
            os.close(dst)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[n:]


def run_pipes(argv: list[str], env: dict[str, str],
              setup: Callable[[], None] | None = None) -> int:
    """Pipe mode: the child's fds 0-2 are ours, terminals among them replaced by pipes."""
    fds: list[int] = []
    close_after: list[int] = []  # the child's ends of our pipes
    feeder: threading.Thread | None = None  # terminal -> the command's stdin
    drains: list[tuple[threading.Thread, int]] = []  # the command's output -> terminal
    for fd in (0, 1, 2):
        if not _is_tty(fd):
            fds.append(fd)
            continue
        r, w = os.pipe()
        if fd == 0:
            fds.append(r)
            close_after.append(r)
            # A daemon: it may still block reading the terminal after the command ended.
            feeder = threading.Thread(target=_copy, args=(0, w, True), daemon=True)
        else:
            fds.append(w)
            close_after.append(w)
            drains.append((threading.Thread(target=_copy, args=(r, fd, False), daemon=True),
                           r))
    procs: list[subprocess.Popen] = []
    with _Forwarder(lambda: procs[0].pid if procs else None) as fwd:
        try:
            procs.append(subprocess.Popen(argv, env=env, stdin=fds[0], stdout=fds[1],
                                          stderr=fds[2], preexec_fn=_child_setup(None, setup)))
        finally:
            for fd in close_after:
                os.close(fd)
        fwd.start()
        for t in [feeder] if feeder else []:
            t.start()
        for t, _r in drains:
            t.start()
        code = _wait(procs[0])
    for t, r in drains:
        t.join(timeout=5)  # the rest of the command's output
        os.close(r)
    return exit_code(code)


def _wait(proc: subprocess.Popen) -> int:
    while True:
        try:
            return proc.wait()
        except InterruptedError:
            continue


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def run_pty(argv: list[str], env: dict[str, str],
            setup: Callable[[], None] | None = None) -> int:
    """Pty mode: the child runs on a new pseudo-terminal that virtmix relays."""
    master, slave = os.openpty()
    _copy_winsize(0, slave)
    try:
        attrs = termios.tcgetattr(0)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)  # the admin's erase, intr, ...
    except termios.error:
        attrs = None
    err = slave if _is_tty(2) else 2
    procs: list[subprocess.Popen] = []

    def foreground() -> int | None:
        if not procs:
            return None
        try:
            return os.tcgetpgrp(master)
        except OSError:
            return procs[0].pid

    fwd = _Forwarder(foreground).__enter__()
    try:
        procs.append(subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=err,
                                      preexec_fn=_child_setup(0, setup)))
    except BaseException:
        fwd.__exit__()
        os.close(master)
        os.close(slave)
        raise
    os.close(slave)
    proc = procs[0]
    fwd.start()
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(0, master))
    try:
        if attrs is not None:
            tty.setraw(0)
        _relay(master, proc)
        code = _wait(proc)
    finally:
        fwd.__exit__()
        if attrs is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, attrs)
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(master)
    return exit_code(code)


def _relay(master: int, proc: subprocess.Popen) -> None:
    """Copy stdin -> master and master -> stdout until the pty's last holder closes it."""
    stdin_open = True
    while True:
        watch = [master] + ([0] if stdin_open else [])
        try:
            ready, _, _ = select.select(watch, [], [], 0.2 if proc.poll() is None else 0)
        except InterruptedError:
            continue
        if not ready and proc.poll() is not None:
            # The command ended; what it wrote is read above, so stop unless a process
            # it left behind still writes (then EIO ends us once that one closes).
            return
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError as e:
                if e.errno == errno.EIO:  # every holder of the slave side closed it
                    return
                raise
            if not data:
                return
            _write_all(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                stdin_open = False
                continue
            _write_all(master, data)


def run_relayed(argv: list[str], env: dict[str, str],
                setup: Callable[[], None] | None = None) -> int:
    """Run argv (e.g. nsenter ...) as described above; its exit code."""
    if _is_tty(0) and _is_tty(1):
        return run_pty(argv, env, setup)
    return run_pipes(argv, env, setup)
