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


def _build_item(name: str) -> Item:
    return Item("domain", "container", name, name, "test:///default", "h1", 1, "create",
                ops=["prepare", "define"])


def test_first_ctrl_c_says_what_it_waits_for_second_kills_the_build_and_its_output(
        monkeypatch, tmp_path):
    """A build in its own session does not get the terminal's Ctrl-C: the first one says
    that apply waits for it, the second kills it and its partial tree goes."""
    from virtmix.rootfs.build import _locked_build, run_logged
    from virtmix.rootfs.storage import Storage
    from virtmix.util import children

    storage = Storage(tmp_path / "storage")
    storage.ensure()
    pids: list[int] = []

    def slow_build(ctx, item, conn, op):
        if op != "prepare":
            return

        def make(tmp, log):
            (tmp / "tree").mkdir()
            (tmp / "tree" / "half-written").write_text("x")
            run_logged(["sh", "-c", "echo $$ > " + str(tmp_path / "pid") + "; exec sleep 60"],
                       log, None, "mmdebstrap bookworm")
            return {}

        _locked_build(storage, "entry1", make)

    monkeypatch.setattr(apply, "_run_op", slow_build)
    lines: list[str] = []
    ctx = apply.Context(site=None, conns={"test:///default": object()}, jobs=1,
                        notice=lines.append)
    main = threading.get_ident()

    def ctrl_c_twice():
        while not children.running():
            time.sleep(0.01)
        pids.append(children.running()[0].pid)
        signal.pthread_kill(main, signal.SIGINT)
        while not lines:
            time.sleep(0.01)
        time.sleep(0.5)  # the first Ctrl-C must not stop the build
        assert children.running(), "the build ended after the first Ctrl-C"
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c_twice, daemon=True).start()
    t0 = time.monotonic()
    result = apply.run_plan(ctx, Plan("s", [_build_item("c1"), _build_item("c2")]))
    assert time.monotonic() - t0 < 10
    assert result.interrupted
    assert lines[0] == ("stopping: waiting for the rootfs build (mmdebstrap bookworm) of c1 "
                        "to finish; Ctrl-C again to stop now"), lines
    assert lines[1].startswith("stopping now: killed rootfs build (mmdebstrap bookworm) of c1")
    assert [(o.item.name, o.status) for o in result.outcomes] == [("c1", "skipped"),
                                                                  ("c2", "skipped")]
    assert "Ctrl-C twice" in result.outcomes[0].message
    assert not list(storage.cache_root.glob(".build-*")), "partial build output left behind"
    assert not children.running()
    import os

    try:
        os.kill(pids[0], 0)
        alive = open(f"/proc/{pids[0]}/stat").read().split()[2] != "Z"
    except OSError:
        alive = False
    assert not alive, "the builder survived the second Ctrl-C"
