"""Two unprivileged containers built by virtmix run on the real daemon with id ranges of their
own: root in one owns nothing in the other's tree (issue 9), and the ranges are recorded in
the tree's state and the domain's metadata."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import LXC, virsh, vm
from lxml import etree
from support import cleanup_domains, lxc_run, wait_for

from virtmix.errors import VirtmixError
from virtmix.rootfs import Storage, remove_container_tree
from virtmix.util.identity import VIRTMIX_NS
from virtmix.util.idranges import overlaps

PFX = "vmixt-rth-idm-"
A, B = PFX + "a", PFX + "b"
STORAGE = Path("/var/tmp/vmixt-rth-idmap")  # on disk: containers run from it


def _clean(conn) -> None:
    cleanup_domains(conn, PFX)
    st = Storage(STORAGE)
    for name in st.container_names():
        with contextlib.suppress(VirtmixError):
            remove_container_tree(st, name)
    shutil.rmtree(STORAGE, ignore_errors=True)


@pytest.fixture(scope="module")
def two(lxc_conn) -> Iterator[dict[str, tuple[int, int, int, int]]]:
    # Isolated ranges asked for: on this cgroup v1 host the default ('auto') shares one
    # range (docs/rootfs.md); busybox containers (no systemd) run with their own anyway.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIRTMIX_IDMAP", "isolated")
        yield from _two(lxc_conn)


def _two(lxc_conn) -> Iterator[dict[str, tuple[int, int, int, int]]]:
    _clean(lxc_conn)
    STORAGE.mkdir(mode=0o755)
    STORAGE.chmod(0o755)
    ranges = {}
    for name in (A, B):
        vm("create", name, "--template", "busybox", "--storage", str(STORAGE), timeout=120)
        state = json.loads((STORAGE / "containers" / name / "state.json").read_text())
        ranges[name] = tuple(state["idmap"])
        vm("start", name)
    for name in (A, B):
        wait_for(lambda n=name: lxc_run(n, ["true"]).returncode == 0, 15,
                 f"busybox init of {name}")
    yield ranges
    _clean(lxc_conn)


def _ids_below(root: Path) -> set[int]:
    ids = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames, "."]:
            st = os.lstat(os.path.join(dirpath, n))
            ids |= {st.st_uid, st.st_gid}
    return ids


def test_each_container_has_its_own_recorded_range(two):
    a, b = two[A], two[B]
    assert a[1] != 100000 and b[1] != 100000 and not overlaps(a, b)
    for name, m in two.items():
        root = etree.fromstring(virsh(LXC, "dumpxml", name).encode())
        assert (root.find("idmap/uid").get("target"), root.find("idmap/gid").get("target"),
                root.find("idmap/uid").get("count")) == (str(m[1]), str(m[3]), str(m[2]))
        meta = root.find(f"metadata/{{{VIRTMIX_NS}}}entry")
        assert meta.get("idmap") == f"{m[1]}:{m[3]}:{m[2]}"  # and in its metadata
        tree = STORAGE / "containers" / name / "rootfs"
        assert _ids_below(tree) <= set(range(m[1], m[1] + m[2])), name
        # root inside is root of its tree, and its processes run as its own range
        assert vm("attach", name, "--", "id", "-u").stdout.strip() == "0"
    owners = {name: {r["uid"] for r in json.loads(vm("ps", name, "-o", "json").stdout)}
              for name in two}
    for name, m in two.items():
        assert owners[name] and all(m[1] <= u < m[1] + m[2] for u in owners[name]), owners


def test_root_of_one_container_owns_nothing_in_the_others_tree(two):
    """A process with a's root uid (as a's root is on the host) cannot change b's tree."""
    a_root = two[A][1]
    b_tree = STORAGE / "containers" / B / "rootfs"
    a_tree = STORAGE / "containers" / A / "rootfs"
    results = {}
    for label, tree in (("own", a_tree), ("other", b_tree)):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            code = b"?"
            try:
                os.setgroups([])
                os.setgid(two[A][3])
                os.setuid(a_root)
                for target in (tree / "etc" / "passwd", tree / "root"):
                    try:
                        os.chmod(target, 0o777 if target.is_dir() else 0o666)
                        code = b"changed"
                        break
                    except PermissionError:
                        code = b"denied"
            finally:
                os.write(w, code)
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        results[label] = os.read(r, 16)
        os.close(r)
    assert results == {"own": b"changed", "other": b"denied"}
    assert stat.S_IMODE(os.lstat(b_tree / "etc" / "passwd").st_mode) != 0o666


def test_the_range_survives_destroy_of_the_other_and_is_not_reshuffled(two):
    before = json.loads((STORAGE / "containers" / A / "state.json").read_text())["idmap"]
    vm("stop", A, "--force")
    vm("start", A)
    xml = virsh(LXC, "dumpxml", A)
    assert f"target='{before[1]}'" in xml
