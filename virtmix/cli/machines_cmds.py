"""metrics, watch: virtmix for dashboards and alerting (Prometheus figures, drift events).

`metrics` prints one scrape in Prometheus text format, or with --listen ADDR:PORT serves
/metrics until stopped. `watch` streams lifecycle events of the site's domains (one line,
or one JSON object, per event) and flags drift: a managed domain changed outside virtmix.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import typer

from virtmix.admin.targets import Session
from virtmix.cli.base import OPTIONS, OUTPUT_OPTION, Output, app, err
from virtmix.cli.completers import complete_host
from virtmix.errors import UsageError

HOST_OPTION = typer.Option(None, "--host", help="Only the connections of this inventory host "
                           "(and the guests on it).", autocompletion=complete_host)


def _session() -> Session:
    return Session(connect=OPTIONS.connect, inventory=OPTIONS.inventory)


def parse_listen(addr: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {addr}: expected HOST:PORT, e.g. 127.0.0.1:9177")
    return host.strip("[]") or "0.0.0.0", int(port)


@app.command("metrics")
def metrics_cmd(listen: str = typer.Option(None, "--listen", metavar="ADDR:PORT",
                                           help="Serve /metrics here instead of printing "
                                           "once (e.g. 127.0.0.1:9177)."),
                host: str = HOST_OPTION) -> None:
    """Prometheus figures of every domain: state, CPU, memory, block I/O, network."""
    from virtmix.machines.metrics import Collector, exposition, serve

    collector = Collector(_session, host)
    if listen is None:
        sys.stdout.write(exposition(collector).decode())
        for problem in collector.last.errors if collector.last else ():
            err.print(f"virtmix: warning: {problem}", markup=False)
        return
    addr, port = parse_listen(listen)
    try:
        server, _thread = serve(collector, addr, port)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: cannot listen there: {exc.strerror}") from None
    err.print(f"virtmix: serving Prometheus metrics on http://{listen}/metrics", markup=False)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.shutdown()


@app.command("watch")
def watch_cmd(output: Output = OUTPUT_OPTION,
              drift_only: bool = typer.Option(False, "--drift-only", help="Only drift."),
              every: bool = typer.Option(False, "--all", help="Also events of domains that "
                                         "are not the site's (or not virtmix's)."),
              count: int = typer.Option(0, "--count", min=0, help="Stop after this many "
                                        "events (0: run until stopped)."),
              timeout: float = typer.Option(0, "--timeout", min=0, metavar="SECONDS",
                                            help="Stop after this long (0: never)."),
              host: str = HOST_OPTION) -> None:
    """Stream lifecycle events of the site's domains (nested ones too) and flag drift."""
    from virtmix.backend.events import EventStream
    from virtmix.errors import BackendError
    from virtmix.machines import events

    stream = EventStream()  # before any connection: libvirt's event loop comes first
    session = _session()
    try:
        places = [p for p in session.places() if not host or p.host == host]
        if session.site is not None:
            watched = events.from_site(session.site, places)
        else:
            watched = events.from_connections([(p, c) for p, c in session.reachable()
                                               if p in places])
            for warning in session.warnings:
                err.print(f"virtmix: warning: {warning}", markup=False)
        watching = 0
        for place in places:
            try:
                stream.watch(place.uri)
                watching += 1
            except BackendError as exc:
                err.print(f"virtmix: warning: {exc.message}", markup=False)
        if not watching:
            raise BackendError("no connection to watch could be opened")
        err.print(f"virtmix: watching {watching} connection{'s' if watching != 1 else ''}"
                  f" ({len(watched.managed)} managed domains)", markup=False)
        _loop(stream, watched, output, drift_only, every, count, timeout)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        stream.close()


def _loop(stream, watched, output: Output, drift_only: bool, every: bool, count: int,
          timeout: float) -> None:
    from virtmix.machines import events

    deadline = time.monotonic() + timeout if timeout else None
    shown = 0
    while deadline is None or time.monotonic() < deadline:
        ev = events.next_event(stream, 0.2)
        if ev is None:
            continue
        if isinstance(ev, tuple):  # ("connection-lost", uri)
            err.print(f"virtmix: warning: lost the connection to {ev[1]}", markup=False)
            continue
        rec = events.classify(watched, ev)
        if (drift_only and not rec["drift"]) or not (every or rec["managed"]):
            continue
        sys.stdout.write((json.dumps(rec) if output == Output.json else events.line(rec))
                         + "\n")
        sys.stdout.flush()
        shown += 1
        if count and shown >= count:
            return
