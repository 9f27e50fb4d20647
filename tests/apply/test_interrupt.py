"""Ctrl-C during apply reaches run_plan even when the kernel hands SIGINT to a worker
thread (it may pick any thread that does not block it)."""

from __future__ import annotations

import signal
import threading
import time

from virtmix.converge import apply
from virtmix.converge.plan import Item, Plan


def test_sigint_delivered_to_a_worker_thread_stops_the_apply(monkeypatch):
    ran: list[str] = []
    workers: list[int] = []

    def slow_ops(ctx, item):
        workers.append(threading.get_ident())
        time.sleep(0.05)
        ran.append(item.name)
        return apply.Outcome(item, "ok")

    monkeypatch.setattr(apply, "_run_ops", slow_ops)
    items = [Item("domain", "container", f"c{i}", f"c{i}", "test:///default", "h1", 1,
                  "create", ops=["define"]) for i in range(40)]
    ctx = apply.Context(site=None, conns={}, jobs=1)

    def interrupt_a_worker():
        while len(ran) < 3:
            time.sleep(0.005)
        signal.pthread_kill(workers[-1], signal.SIGINT)  # not the main thread

    threading.Thread(target=interrupt_a_worker, daemon=True).start()
    t0 = time.monotonic()
    result = apply.run_plan(ctx, Plan("s", items))
    assert result.interrupted
    assert len(ran) < 10, f"{len(ran)} of 40 ran before the interrupt was seen"
    assert time.monotonic() - t0 < 1.5
    assert [o.status for o in result.outcomes].count("skipped") == 40 - len(ran)
