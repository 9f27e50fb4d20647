"""Real builds: the cache, its atomic promotion, interrupted and concurrent builds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lxchelp
import pytest

from virtmix.rootfs import cgroup_init, list_cache, prune_cache
from virtmix.rootfs.build import ensure_base
from virtmix.rootfs.spec import RootfsSpec
from virtmix.rootfs.storage import Storage

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BOOKWORM = RootfsSpec(suite="bookworm")  # as conftest's shared base
BUILDER = """
import json, sys
from virtmix.rootfs.build import ensure_base
from virtmix.rootfs.spec import RootfsSpec
from virtmix.rootfs.storage import Storage
b = ensure_base(RootfsSpec(suite="bookworm"), Storage(sys.argv[1]))
print(json.dumps({"entry": b.entry, "cached": b.cached}))
"""


def test_base_is_cached_and_a_second_ensure_is_fast(storage, bookworm_base):
    base, _ = bookworm_base
    assert (base.tree / "sbin/init").exists() or (base.tree / "usr/sbin/init").exists()
    meta = json.loads((base.path / "entry.json").read_text())
    assert meta["spec"]["suite"] == "bookworm" and meta["kind"] == "base"
    t0 = time.monotonic()
    again = ensure_base(BOOKWORM, storage)
    assert time.monotonic() - t0 < 1.0
    assert again.cached and again.path == base.path
    assert base.entry in [e.entry for e in list_cache(storage)]


def test_base_tree_is_prepared_for_containers(bookworm_base):
    tree = bookworm_base[0].tree
    assert (tree / "etc/machine-id").read_text() == ""  # each clone writes its own
    assert not list((tree / "etc/ssh").glob("ssh_host_*")) if (tree / "etc/ssh").exists() \
        else True
    assert os.readlink(tree / "etc/systemd/system/systemd-udevd.service") == "/dev/null"
    assert os.readlink(tree / "etc/systemd/system/getty-static.service") == "/dev/null"
    assert (tree / "etc/fstab").read_text().startswith("#")
    assert "deb.debian.org" not in (tree / "etc/resolv.conf").read_text()
    sources = (tree / "etc/apt/sources.list").read_text()
    assert "signed-by=" in sources and "bookworm" in sources
    assert (tree / "usr/lib/systemd/system/console-getty.service").exists()
    # /sbin/init is the cgroup wrapper, systemd's diverted beside it (dpkg knows: an
    # upgrade of systemd-sysv installs there)
    assert cgroup_init.is_wrapped(tree)
    assert os.readlink(tree / "sbin/init.distrib") == "/lib/systemd/systemd"
    assert "/sbin/init\n/sbin/init.distrib\n:\n" in (tree / "var/lib/dpkg/diversions").read_text()


def _builder(storage: Storage) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(storage.root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _running_builders(storage: Storage) -> list[str]:
    return subprocess.run(["pgrep", "-f", f"mmdebstrap .*{storage.cache_root}"],
                          capture_output=True, text=True).stdout.split()


def _mmdebstrap_pid(storage: Storage, timeout: float = 60) -> int:
    """Wait for the mmdebstrap building into storage, and for it to be well under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _running_builders(storage)
        tree = list(storage.cache_root.glob(".build-*/tree/var/cache/apt/archives/*.deb"))
        if out and tree:  # downloading packages: mid-way
            return int(out[0])
        time.sleep(0.2)
    raise TimeoutError("mmdebstrap did not start downloading")


def test_interrupted_builds_leave_no_entry_and_concurrent_builds_share_one(scratch_storage):
    st = scratch_storage
    # 1. mmdebstrap killed mid-way: the builder fails and cleans up after itself.
    proc = _builder(st)
    os.kill(_mmdebstrap_pid(st), signal.SIGKILL)
    _, errout = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "failed" in errout
    log = re.search(r"; log (/\S+\.log):", errout)
    assert log and Path(log.group(1)).is_file()  # the details outlive the temp dir
    assert "mmdebstrap" in Path(log.group(1)).read_text()
    assert list_cache(st) == [] and not list(st.cache_root.glob(".build-*"))

    # 2. the whole builder killed (like a power cut): a leftover, never an entry.
    proc = _builder(st)
    _mmdebstrap_pid(st)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # mmdebstrap runs in its own session but dies with its parent (PR_SET_PDEATHSIG).
    deadline = time.monotonic() + 10
    while _running_builders(st) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running_builders(st)
    assert list_cache(st) == []
    assert not [p for p in st.cache_root.iterdir() if not p.name.startswith(".")]

    # 3. two builds of the same key at once: one builds (clearing the leftover), the other
    # waits on the lock and finds the entry complete.
    a, b = _builder(st), _builder(st)
    results = []
    for p in (a, b):
        o, e = p.communicate(timeout=300)
        assert p.returncode == 0, e
        results.append(json.loads(o))
    assert results[0]["entry"] == results[1]["entry"]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert [e.entry for e in list_cache(st)] == [results[0]["entry"]]
    assert not list(st.cache_root.glob(".build-*"))
    # prune: unused entries go
    assert prune_cache(st) == [results[0]["entry"]]
    assert list_cache(st) == []


def test_debootstrap_fallback_builds_a_bootable_base(scratch_storage, monkeypatch):

    from virtmix.rootfs import ContainerSetup, provision_container

    monkeypatch.setenv("VIRTMIX_ROOTFS_BUILDER", "debootstrap")  # as if mmdebstrap were absent
    base = ensure_base(BOOKWORM, scratch_storage)
    meta = json.loads((base.path / "entry.json").read_text())
    assert meta["tool"] == "debootstrap"
    sources = (base.tree / "etc/apt/sources.list").read_text()
    assert "signed-by=" in sources and "bookworm-security" in sources
    name = lxchelp.PREFIX + "debootstrap"
    r = provision_container(name, BOOKWORM, ContainerSetup(name=name), scratch_storage)
    lxc = lxchelp.connect()  # opened after the long build, which may outlast a connection
    try:
        lxc.defineXML(lxchelp.domain_xml(name, str(r.path), r.idmap)).create()
        state, waited = lxchelp.wait_running(lxc, name, timeout=60)
        assert state in ("running", "degraded"), f"{state} after {waited:.1f}s"
    finally:
        lxchelp.destroy_undefine(lxc, name)
        lxc.close()


def test_site_hook_runs_chrooted_and_is_part_of_the_key(scratch_storage, tmp_path):
    """Also: an unprivileged clone on an empty cache builds the base shifted directly."""
    from virtmix.rootfs import ContainerSetup, provision_container, remove_container_tree
    from virtmix.rootfs.storage import mounts_below

    hook = tmp_path / "site-hook.sh"
    hook.write_text("#!/bin/sh\nset -e\ntest -e /proc/self/status\n"
                    'echo "site $VIRTMIX_SUITE" > /etc/virtmix-site\n'
                    "rc=0; /usr/sbin/policy-rc.d || rc=$?\n"
                    "echo rc=$rc >> /etc/virtmix-site\n")
    spec = RootfsSpec(suite="bookworm", hook=str(hook))
    name = lxchelp.PREFIX + "hooked"
    r = provision_container(name, spec, ContainerSetup(name=name), scratch_storage)
    entries = list_cache(scratch_storage, sizes=False)
    assert [(e.entry, e.kind) for e in entries] == [(r.cache_entry, "shifted")]
    assert r.cache_entry.startswith(spec.cache_key()) and spec.cache_key() != BOOKWORM.cache_key()
    tree = entries[0].path / "tree"
    lines = (tree / "etc/virtmix-site").read_text().split()
    assert lines == ["site", "bookworm", "rc=101"]  # services could not start in the hook
    assert os.lstat(r.path / "etc/virtmix-site").st_uid == r.idmap[1]  # its own range
    assert not (tree / "usr/sbin/policy-rc.d").exists()
    assert not (tree / "tmp/.virtmix-hook").exists()
    assert json.loads((entries[0].path / "entry.json").read_text())["spec"]["hook"]
    remove_container_tree(scratch_storage, name)
    assert mounts_below(scratch_storage.root) == []
