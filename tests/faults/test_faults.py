"""Faults injected into real applies on the real daemon; the next apply must converge.

Each test breaks one apply (kill -9 at a named point, two applies at once, an apply racing
destroy), then checks with one more apply that every entry is defined once and in its
desired state, `plan` has nothing to do, nothing temporary is left (dirs, `.part`/`.tmp`
files, held locks, orphan mounts) and no sentinel written into a container's tree before
the fault was lost. The long run with many more points and guests is benchmarks/faults.py.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from support.faults import (
    NET,
    PFX,
    REPO,
    apply_killed_at,
    check_converged,
    lost,
    make_site,
    remove_site,
    run,
    virtmix_argv,
    write_sentinels,
)
from support.live import cleanup_networks

pytestmark = pytest.mark.live

# Points of a first apply (from nothing): the network, then each container's steps.
CREATE_POINTS = ["op-network-define-after", "op-network-start-before", "op-prepare-after",
                 "op-define-before", "op-define-after@2", "op-start-before",
                 "op-start-after@2", "verify-begin"]


@pytest.fixture
def site(lxc_conn, domain_cleanup, busybox_tree):
    domain_cleanup(lxc_conn, PFX)
    s = make_site(busybox_tree)
    yield s
    remove_site(s)
    cleanup_networks(lxc_conn, PFX)


def _assert_converged(site, conn, sentinels=None, max_applies=1):
    chk = check_converged(site, conn, max_applies=max_applies)
    assert chk.converged, chk.problems
    assert chk.leftovers == []
    assert lost(site, sentinels or {}) == []


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_kill9_during_first_apply_then_apply_converges(site, lxc_conn, point):
    inj = apply_killed_at(site, point)
    assert inj.reached, f"{point} was not reached: exit {inj.returncode}\n{inj.output}"
    _assert_converged(site, lxc_conn)


@pytest.mark.parametrize("point", ["op-redefine-after", "op-live-before"])
def test_kill9_during_an_update_keeps_data_and_converges(site, lxc_conn, point):
    assert run("apply", str(site.inventory), "--yes", "-q", env=site.env).returncode == 0
    sentinels = write_sentinels(site, lxc_conn)
    for name in site.names:
        site.container(name)["cpu"]["shares"] = 1024  # live + persistent change
    site.write()
    inj = apply_killed_at(site, point)
    assert inj.reached, f"{point} was not reached: exit {inj.returncode}\n{inj.output}"
    _assert_converged(site, lxc_conn, sentinels)


def test_two_applies_of_one_site_at_once(site, lxc_conn):
    results = []

    def one():
        results.append(run("apply", str(site.inventory), "--yes", "-q", env=site.env))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    _assert_converged(site, lxc_conn)


def test_apply_racing_destroy(site, lxc_conn):
    assert run("apply", str(site.inventory), "--yes", "-q", env=site.env).returncode == 0
    for name in site.names:
        site.container(name)["cpu"]["shares"] = 768
    site.write()
    env = {**os.environ, **site.env}
    env.pop("LIBVIRT_DEFAULT_URI", None)
    apply = subprocess.Popen(virtmix_argv("apply", str(site.inventory), "--yes", "-q"),
                             env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    destroy = run("destroy", str(site.inventory), "--yes", "-q", env=site.env)
    apply.communicate(timeout=300)
    # Whichever came second saw the other's result: both end, neither half-done.
    assert destroy.returncode == 0, destroy.stderr
    _assert_converged(site, lxc_conn)
    assert lxc_conn.networkLookupByName(NET).isActive()
