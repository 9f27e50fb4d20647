"""`virtmix watch` on the test driver: lifecycle events through libvirt's event loop, and
drift told from virtmix's own operations (util.oplog marks)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from support.testdriver import held_test_driver

from virtmix.backend.events import EventStream
from virtmix.machines import events
from virtmix.util import oplog
from virtmix.util.identity import VIRTMIX_NS

URI = "test:///default"
PFX = "vmixt-watch-"


def xml(name: str, managed: bool = True) -> str:
    meta = (f"<metadata><v:entry xmlns:v='{VIRTMIX_NS}' site='w' host='hv1' name='{name}' "
            "kind='container'/></metadata>") if managed else ""
    return (f"<domain type='test'><name>{name}</name><memory>65536</memory>{meta}"
            "<os><type>hvm</type></os></domain>")


@pytest.fixture
def held(monkeypatch, tmp_path):
    yield from held_test_driver(monkeypatch, tmp_path, PFX)


def collect(stream, watched, n: int, timeout: float = 5) -> list[dict]:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        ev = events.next_event(stream, 0.1)
        if ev is not None and not isinstance(ev, tuple) and ev.name.startswith(PFX):
            out.append(events.classify(watched, ev))
    return out


class Place:
    def __init__(self, uri: str) -> None:
        self.uri, self.host, self.parent = uri, "hv1", None


def test_own_operations_are_not_drift_and_others_are(held):
    a, b = PFX + "a", PFX + "b"
    held.define(xml(a))
    held.define(xml(b, managed=False))
    stream = EventStream()
    try:
        stream.watch(URI)
        watched = events.from_connections([(Place(URI), held)])
        assert (URI, a) in watched.managed and (URI, b) not in watched.managed
        held.start(a)  # virtmix's Connection: marked
        got = collect(stream, watched, 1)
        assert [(r["entry"], r["event"], r["origin"], r["drift"]) for r in got] == [
            (a, "started", "virtmix", False)]
        time.sleep(oplog.SLACK_SECONDS + 0.2)  # the mark's window closes
        t0 = time.time()
        held._conn.lookupByName(a).destroy()  # behind virtmix's back
        held._conn.lookupByName(b).create()   # not managed: an event, never drift
        got = collect(stream, watched, 2)
        by_name = {r["name"]: r for r in got}
        assert by_name[a]["event"] == "stopped" and by_name[a]["detail"] == "destroyed"
        assert by_name[a]["drift"] and by_name[a]["origin"] == "outside"
        assert "outside virtmix" in by_name[a]["message"]
        assert by_name[b]["managed"] is False and by_name[b]["drift"] is False
        seen = datetime.fromisoformat(by_name[a]["time"]).timestamp()
        assert -0.01 <= seen - t0 < 1.0  # within a second of happening
        # Redefined and undefined outside virtmix: drift too.
        uuid = held.get(a).uuid
        held._conn.defineXML(xml(a).replace("<memory>65536", f"<uuid>{uuid}</uuid><memory>131072"))
        held._conn.lookupByName(a).undefine()
        got = collect(stream, watched, 2)
        assert [(r["event"], r["drift"]) for r in got] == [("redefined", True),
                                                           ("undefined", True)]
    finally:
        stream.close()


def test_new_virtmix_domain_is_followed(held):
    c = PFX + "new"
    stream = EventStream()
    try:
        stream.watch(URI)
        watched = events.from_connections([(Place(URI), held)])
        held._conn.defineXML(xml(c))  # virtmix metadata, defined by someone else
        held._conn.lookupByName(c).create()
        got = collect(stream, watched, 2)
        assert [(r["event"], r["managed"], r["drift"]) for r in got] == [
            ("defined", True, True), ("started", True, True)]
        assert events.line(got[1]).endswith(f"DRIFT: {c} was started outside virtmix (booted)")
    finally:
        stream.close()


def test_marks(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(tmp_path))
    before = time.time()
    with oplog.own_operation("lxc:///system", "x", "start"):
        assert oplog.is_own("lxc:///system", "x", time.time())  # during
    assert oplog.is_own("lxc:///system", "x", time.time() + 1)  # slack after the call
    assert not oplog.is_own("lxc:///system", "x", time.time() + oplog.SLACK_SECONDS + 1)
    assert not oplog.is_own("lxc:///system", "x", before - 1)   # before it began
    assert not oplog.is_own("qemu:///system", "x", time.time())  # other URI


def test_watch_cli_runs_and_stops(tmp_path):
    import subprocess
    import sys

    node = tmp_path / "node.xml"
    node.write_text(f"<node>{xml(PFX + 'n')}</node>")
    proc = subprocess.run([sys.executable, "-c", "from virtmix.cli import main; main()",
                           "-c", f"test://{node}", "watch", "-o", "json", "--timeout", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "watching 1 connection (1 managed domains)" in proc.stderr
