"""Issue 15 against the real libvirtd: saved plans, plan JSON schema, completion, metrics,
drift events (busybox containers named vmixt-mach-*)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from apply_helpers import (
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)
from support import lxc_run, wait_for

pytestmark = pytest.mark.live
PFX = "vmixt-mach-"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas/plan-v1.json").read_text())


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def state(lxc_conn, name: str) -> int:
    return lxc_conn.lookupByName(name).state()[0]


def test_saved_plan_on_the_real_daemon(lxc_conn, storage, busybox_tree):
    a, b = PFX + "a", PFX + "b"
    hosts = {"h1": lxc_host({a: busybox(busybox_tree), b: busybox(busybox_tree)})}
    inv = str(write_inventory(storage, hosts, name="vmixt-mach-site"))
    plan = storage / "create.plan"
    virtmix("plan", inv, "--out", str(plan), check=10)
    jsonschema.validate(json.loads(plan.read_text()), SCHEMA)
    jsonschema.validate(json.loads(virtmix("plan", inv, "-o", "json", check=10).stdout),
                        SCHEMA)
    virtmix("apply", str(plan), check=0)
    assert state(lxc_conn, a) == 1 and state(lxc_conn, b) == 1
    # Now a change is planned and saved, then b is stopped behind virtmix's back.
    hosts["h1"]["containers"][a]["cpu"] = {"shares": 256}
    write_inventory(storage, hosts, name="vmixt-mach-site")
    plan2 = storage / "shares.plan"
    virtmix("plan", inv, "--out", str(plan2), check=10)
    subprocess.run(["virsh", "-c", "lxc:///system", "destroy", b], check=True,
                   capture_output=True)
    res = virtmix("apply", str(plan2), check=13)
    assert f"Saved plan {plan2} is stale: domain {b} on lxc:///system changed" in res.stderr
    assert "<shares>256</shares>" not in lxc_conn.lookupByName(a).XMLDesc(0)
    # A fresh plan applies; a plan of nothing is a no-op.
    virtmix("plan", inv, "--out", str(plan2), check=10)
    virtmix("apply", str(plan2), check=0)
    assert "<shares>256</shares>" in lxc_conn.lookupByName(a).XMLDesc(0)
    assert state(lxc_conn, b) == 1
    virtmix("plan", inv, "--out", str(plan2), check=0)
    pid = lxc_conn.lookupByName(a).ID()
    res = virtmix("apply", str(plan2), check=0)
    assert "nothing to do" in res.stdout and lxc_conn.lookupByName(a).ID() == pid
    # The inventory edited after the plan: stale.
    Path(inv).write_text(Path(inv).read_text() + "# edited\n")
    res = virtmix("apply", str(plan2), check=13)
    assert f"the inventory {Path(inv).resolve()} changed" in res.stderr


def _watch(*args: str) -> tuple[subprocess.Popen, queue.Queue]:
    """virtmix watch as a process; its stdout lines in a queue (a reader thread: select()
    on a buffered pipe misses lines that arrived together)."""
    from apply_helpers import virtmix_argv

    env = dict(os.environ)
    env.pop("LIBVIRT_DEFAULT_URI", None)
    proc = subprocess.Popen(virtmix_argv(*args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    return proc, lines


def _read_json_line(lines: queue.Queue, timeout: float) -> dict | None:
    """The next event of one of this test's domains (others' may share the daemon)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rec = json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return None
        if rec["name"].startswith(PFX):
            return rec


def test_watch_flags_virsh_destroy_as_drift_within_a_second(lxc_conn, storage, busybox_tree):
    name = PFX + "drift"
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree)})},
                              name="vmixt-mach-site"))
    virtmix("apply", inv, "--yes", check=0)
    proc, lines = _watch("-i", inv, "watch", "-o", "json", "--timeout", "120")
    try:
        wait_for(lambda: "watching" in (proc.stderr.readline() or ""), timeout=30,
                 what="watch to start")
        # virtmix's own stop and start: events, not drift (libvirt may repeat a stopped
        # event when a container is destroyed early in its boot: every one is virtmix's).
        virtmix("stop", "--force", name, check=0)
        virtmix("-i", inv, "start", name, check=0)
        seen = []
        while not seen or seen[-1]["event"] != "started":
            rec = _read_json_line(lines, 10)
            assert rec is not None, f"no started event after virtmix start; saw {seen}"
            seen.append(rec)
        assert seen[0]["event"] == "stopped", seen
        assert all(r["origin"] == "virtmix" and r["drift"] is False for r in seen), seen
        time.sleep(3)  # past the slack of virtmix's own operation
        # libvirt's LXC destroy returns once the container is gone (it waits up to ~1.8 s
        # for an init that ignores SIGTERM): that is when it happened.
        subprocess.run(["virsh", "-c", "lxc:///system", "destroy", name], check=True,
                       capture_output=True)
        done = time.time()
        rec = _read_json_line(lines, 1.0)
        assert rec is not None, "no event within a second of virsh destroy"
        assert rec["entry"] == name and rec["event"] == "stopped", rec
        assert rec["drift"] is True and rec["origin"] == "outside"
        assert rec["site"] == "vmixt-mach-site" and rec["host"] == "h1"
        assert datetime.fromisoformat(rec["time"]).timestamp() - done < 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_metrics_of_a_running_container(lxc_conn, storage, busybox_tree):
    from prometheus_client.parser import text_string_to_metric_families

    name = PFX + "metrics"
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(
        busybox_tree, memtune={"hard_limit": "96MiB"})})}, name="vmixt-mach-site"))
    virtmix("apply", inv, "--yes", check=0)
    # Some disk and CPU work inside, so the counters move.
    wait_for(lambda: lxc_run(name, ["true"]).returncode == 0, timeout=15, what="container")
    lxc_run(name, ["sh", "-c", "dd if=/dev/zero of=/tmp/x bs=64k count=64; sync"])
    res = virtmix("-i", inv, "metrics", check=0)
    fams = {f.name: {s.labels.get("entry"): s for s in f.samples}
            for f in text_string_to_metric_families(res.stdout)}
    mine = fams["virtmix_domain_running"][name]
    assert mine.value == 1 and mine.labels["site"] == "vmixt-mach-site"
    assert mine.labels["host"] == "h1" and mine.labels["kind"] == "container"
    assert fams["virtmix_domain_cpu_seconds"][name].value > 0
    assert fams["virtmix_domain_memory_usage_bytes"][name].value > 0
    assert fams["virtmix_domain_memory_limit_bytes"][name].value == 96 * 1024 * 1024
    assert name in fams["virtmix_domain_network_receive_bytes"] or \
        name not in fams["virtmix_domain_network_transmit_bytes"]  # no interface: no sample
    virtmix("stop", "--force", name, check=0)
    fams = {f.name: {s.labels.get("entry"): s for s in f.samples}
            for f in text_string_to_metric_families(virtmix("-i", inv, "metrics",
                                                            check=0).stdout)}
    assert fams["virtmix_domain_running"][name].value == 0
    assert fams["virtmix_domain_state"][name].labels["state"] == "shutoff"


def test_completion_of_real_domain_names(lxc_conn, storage, busybox_tree):
    name = PFX + "complete-me"
    inv = str(write_inventory(storage, {"h1": lxc_host({name: busybox(busybox_tree)})},
                              name="vmixt-mach-site"))
    virtmix("apply", inv, "--yes", check=0)
    from apply_helpers import virtmix_argv

    env = {**os.environ, "_VIRTMIX_COMPLETE": "complete_bash",
           "COMP_WORDS": f"virtmix stop {PFX}complete", "COMP_CWORD": "2",
           "VIRTMIX_COMPLETE_TIMEOUT": "10"}
    env.pop("LIBVIRT_DEFAULT_URI", None)
    out = subprocess.run(virtmix_argv(), capture_output=True, text=True, env=env).stdout
    assert out.split() == [name]  # from both local drivers, no -c
    env["COMP_WORDS"] = f"virtmix -i {inv} cgroup {name} memory.l"
    env["COMP_CWORD"] = "5"
    out = subprocess.run(virtmix_argv(), capture_output=True, text=True, env=env).stdout
    assert out.split() == ["memory.limit_in_bytes"]


def test_metrics_of_a_qemu_guest_come_in_bulk(qemu_conn, domain_cleanup):
    """A QEMU guest with no disk (SeaBIOS finds nothing to boot and idles): its figures
    come from virConnectGetAllDomainStats."""
    from prometheus_client.parser import text_string_to_metric_families

    domain_cleanup(qemu_conn, PFX)
    name = PFX + "qemu"
    qemu_conn.defineXML(f"""<domain type='qemu'><name>{name}</name>
      <memory unit='MiB'>64</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>""")
    qemu_conn.lookupByName(name).create()
    time.sleep(1)
    res = virtmix("-c", "qemu:///system", "metrics", check=0)
    fams = {f.name: {s.labels.get("entry"): s for s in f.samples}
            for f in text_string_to_metric_families(res.stdout)}
    assert fams["virtmix_domain_running"][name].labels["kind"] == "guest"
    assert fams["virtmix_domain_cpu_seconds"][name].value > 0
    assert fams["virtmix_domain_memory_limit_bytes"][name].value == 64 * 1024 * 1024
    assert fams["virtmix_domain_memory_usage_bytes"][name].value > 0
