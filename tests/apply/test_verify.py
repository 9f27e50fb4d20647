"""Verified starts against libvirt's test driver: the settle watch sees a domain that dies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from virtmix.backend import open_connection
from virtmix.converge.verify import Started, log_files, relevant_lines, settle_seconds, watch
from virtmix.errors import BackendError

DOMAIN = """<domain type='test'><name>{name}</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


@pytest.fixture
def conn(node_uri: str):
    c = open_connection(node_uri)
    yield c
    c.close()


def _start(conn, name: str) -> Started:
    conn.define(DOMAIN.format(name=name))
    conn.start(name)
    return Started(conn, name, name, "guest")


def test_a_domain_that_dies_in_the_window_fails_and_the_other_stands(conn) -> None:
    dies, lives = _start(conn, "dies"), _start(conn, "lives")
    threading.Timer(0.2, conn.destroy, args=("dies",)).start()
    t0 = time.monotonic()
    watch([dies, lives], settle=0.8)
    took = time.monotonic() - t0
    assert dies.failure and "guest dies stopped right after it started (state: shutoff)" \
        in dies.failure
    assert lives.failure is None
    assert 0.7 <= took < 1.5  # one window for both, not one per domain


def test_windows_overlap_for_many_starts(conn) -> None:
    started = [_start(conn, f"d{i}") for i in range(8)]
    t0 = time.monotonic()
    watch(started, settle=0.5)
    assert time.monotonic() - t0 < 1.5
    assert all(s.failure is None for s in started)


def test_settle_seconds_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTMIX_SETTLE_SECONDS", "2.5")
    assert settle_seconds() == 2.5
    monkeypatch.setenv("VIRTMIX_SETTLE_SECONDS", "soon")
    with pytest.raises(BackendError, match="VIRTMIX_SETTLE_SECONDS"):
        settle_seconds()


def test_log_lines_keep_the_last_start_without_the_controller_command_line() -> None:
    log = ("2026-01-01 10:00:00.000+0000: starting up\nold line\n"
           "2026-01-01 11:00:00.000+0000: starting up\n"
           "PATH=/x LIBVIRT_DEBUG=3 LIBVIRT_LOG_OUTPUTS=3:stderr /usr/lib/libvirt/libvirt_lxc\n"
           "PATH=/bin:/sbin LIBVIRT_LXC_NAME=c1 /bin/false\n"
           "/sbin/init: error while loading shared libraries: libkmod.so.2: file too short\n")
    got = relevant_lines(log, 10)
    assert got[0].endswith("11:00:00.000+0000: starting up")
    assert "old line" not in got and not any("LIBVIRT_LOG_OUTPUTS" in x for x in got)
    assert got[-1].endswith("file too short")
    assert len(relevant_lines("x" * 1000, 5)[0]) <= 203


def test_log_files_name_libvirts_log_and_a_guests_serial_file() -> None:
    xml = ("<domain type='kvm'><devices><serial type='file'><source path='/s/serial.log'/>"
           "</serial></devices></domain>")
    assert log_files("qemu:///system", "g1", "guest", xml) == [
        Path("/var/log/libvirt/qemu/g1.log"), Path("/s/serial.log")]
    assert log_files("lxc:///system", "c1", "container") == [
        Path("/var/log/libvirt/lxc/c1.log")]
