"""Host facts on the real daemon: containers started together each get their real init pid
(never 0), and the local host reads and writes a running container's cpuset cgroup."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import busybox_lxc_xml, cleanup_domains

from virtmix.backend import open_connection
from virtmix.hosts import host_for
from virtmix.hosts.cgroupfs import cgroup_dirs, cgroup_version, mounts
from virtmix.hosts.local import init_pid
from virtmix.util.units import parse_cpuset

pytestmark = pytest.mark.live

PFX = "vmixt-hostsif-"
LXC = "lxc:///system"


@pytest.fixture
def started(lxc_conn, busybox_tree: Path):
    """Three busybox containers started at once (libvirt's status file can then say
    'Init process ID is not yet known', pid 0, for a moment)."""
    cleanup_domains(lxc_conn, PFX)
    names = [f"{PFX}{i}" for i in range(3)]
    for n in names:
        lxc_conn.defineXML(busybox_lxc_xml(n, busybox_tree))
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: lxc_conn.lookupByName(n).create(), names))
    yield names
    cleanup_domains(lxc_conn, PFX)


def test_init_pid_right_after_parallel_starts_is_the_controllers_child(started):
    conn = open_connection(LXC)
    try:
        for name in started:
            controller = conn.get(name).id
            pid = init_pid(name, controller)  # asked at once, as `info` right after start
            assert pid > 0
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert ppid == controller, (name, pid, ppid, controller)
            assert host_for(LXC).init_pid(name, controller) == pid
    finally:
        conn.close()


def test_local_host_reads_and_writes_a_running_containers_cpuset(started):
    conn = open_connection(LXC)
    name = started[0]
    try:
        controller = conn.get(name).id
        host = host_for(LXC)
        before = host.read_cpuset(controller)
        assert before
        host.write_cpuset(controller, frozenset({0}))
        assert host.read_cpuset(controller) == "0"
        cpus_file = cgroup_dirs(controller).get("cpuset") or cgroup_dirs(controller)[""]
        assert (cpus_file / "cpuset.cpus").read_text().strip() == "0"  # the cgroup itself
        host.write_cpuset(controller, parse_cpuset(before))  # and back, wider again
        assert host.read_cpuset(controller) == before
    finally:
        conn.close()


def test_cgroup_version_agrees_with_the_mounts():
    found = mounts()
    v1 = [c for c in found if c and not c.startswith("name=")]
    assert cgroup_version() == ("v1" if v1 else "v2")
    assert host_for(LXC).shares_are_weights() == (cgroup_version() == "v2")


def test_worker_threads_get_connections_of_their_own_to_a_local_daemon():
    """libvirtd serves at most max_client_requests (5 by default) calls of one connection at
    once: apply -j N and bulk destroy would queue behind it. Each worker thread gets its own
    connection to a local daemon; the thread that opened it keeps the first; close() closes
    them all. A test driver (one world per open) never does."""
    import threading

    conn = open_connection("lxc:///system")
    try:
        seen: set[int] = set()
        barrier = threading.Barrier(6)

        def work(_i: int) -> int:
            barrier.wait()  # six threads at once, so the pool really has six
            conn.list_domains()
            seen.add(id(conn._conn))
            return conn._conn.getLibVersion()

        with ThreadPoolExecutor(max_workers=6) as pool:
            assert len(set(pool.map(work, range(6)))) == 1
        assert len(seen) == 6 and id(conn._main) not in seen
        extra = list(conn._extra)
        assert len(extra) == 6 and all(c.isAlive() for c in extra)
        assert conn._conn is conn._main  # this thread: the first connection
    finally:
        conn.close()
    assert conn._extra == [] and not any(_alive(c) for c in extra)

    test = open_connection("test:///default")
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert set(pool.map(lambda _i: id(test._conn), range(2))) == {id(test._main)}
    finally:
        test.close()


def _alive(conn) -> bool:
    import libvirt

    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:  # closed: "invalid connection pointer"
        return False
