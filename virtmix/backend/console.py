"""A domain's console on this terminal, through libvirt's openConsole stream (as virsh does).

The stream and the terminal are driven by libvirt's default event loop: it must be registered
before the connection opens, so the console uses a connection of its own. Leaving: Ctrl-]
(the escape byte 0x1d, as in virsh and telnet); the session also ends when the domain's
console closes (it stopped). The terminal is raw meanwhile, so Ctrl-C reaches the domain.
"""

from __future__ import annotations

import os
import sys
import termios
import tty

import libvirt

from virtmix.backend import resolve_uri
from virtmix.backend.translate import translate as _translate
from virtmix.errors import BackendError

ESCAPE = b"\x1d"  # Ctrl-]
ESCAPE_NAME = "^] (Ctrl + ])"
_event_loop_registered = False


def _register_event_loop() -> None:
    global _event_loop_registered
    if not _event_loop_registered:
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_registered = True


class _Session:
    """Copies bytes stream -> stdout and stdin -> stream until escape, EOF or hangup."""

    def __init__(self, stream: libvirt.virStream, stdin_fd: int, stdout_fd: int) -> None:
        self.stream, self.stdin_fd, self.stdout_fd = stream, stdin_fd, stdout_fd
        self.running = True
        self.reason = "escape"

    def stop(self, reason: str) -> None:
        if self.running:
            self.running, self.reason = False, reason

    def on_stream(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(4096)
                except libvirt.libvirtError:
                    self.stop("console closed")
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:
                    self.stop("console closed")
                    return
                os.write(self.stdout_fd, data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.stop("console closed")

    def on_stdin(self, _watch: int, fd: int, _events: int, _opaque: object) -> None:
        data = os.read(fd, 1024)
        if not data:
            self.stop("end of input")
            return
        head, esc, _tail = data.partition(ESCAPE)
        if head:
            try:
                self.stream.send(head)
            except libvirt.libvirtError:
                self.stop("console closed")
        if esc:
            self.stop("escape")


def run_console(uri: str, name: str, *, force: bool = False, stdin_fd: int = 0,
                stdout_fd: int = 1) -> str:
    """Attach this terminal to the console of running domain `name`; returns why it ended."""
    _register_event_loop()
    try:
        conn = libvirt.open(resolve_uri(uri))  # e.g. a guest's libvirt via virtmix's ssh
    except libvirt.libvirtError as exc:
        raise BackendError(f"cannot connect to libvirt at {uri}: "
                           f"{exc.get_error_message()}") from None
    try:
        with _translate(f"opening the console of {name}", uri):
            dom = conn.lookupByName(name)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
        return _drive(stream, stdin_fd, stdout_fd)
    finally:
        conn.close()


def _drive(stream: libvirt.virStream, stdin_fd: int, stdout_fd: int) -> str:
    session = _Session(stream, stdin_fd, stdout_fd)
    stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                            | libvirt.VIR_STREAM_EVENT_HANGUP, session.on_stream, None)
    watch = libvirt.virEventAddHandle(stdin_fd, libvirt.VIR_EVENT_HANDLE_READABLE,
                                      session.on_stdin, None)
    saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None
    try:
        if saved is not None:
            tty.setraw(stdin_fd)
        while session.running:
            libvirt.virEventRunDefaultImpl()
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        libvirt.virEventRemoveHandle(watch)
        try:
            stream.eventRemoveCallback()
            stream.abort() if session.reason == "escape" else stream.finish()
        except libvirt.libvirtError:
            pass
        sys.stderr.flush()
    return session.reason
