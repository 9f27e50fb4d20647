"""An unprivileged container moved to a host whose id range for it differs (issue 13): the
copied tree is shifted to the target's range and the container runs there with the owners
it had inside.

The "other host" is this machine's libvirtd behind a loopback sshd (test_apply_ssh's
fixture): the copy goes over ssh (rsync), the shift runs there (idmap.py's code in that
host's python3), the domain is frozen, redefined on the target's tree with the target's
range (one daemon: it cannot be defined twice) and started through the ssh URI. Busybox
init: on this cgroup v1 host systemd runs only in the shared range (docs/rootfs.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
from admin_helpers import vm
from support import cleanup_domains, lxc_run, wait_for
from test_apply_ssh import loopback_ssh  # noqa: F401 - the second host over ssh

from virtmix.backend import open_connection
from virtmix.converge.move import TreeHooks, move_container
from virtmix.errors import VirtmixError
from virtmix.hosts.ssh import run_remote
from virtmix.rootfs import Storage, remove_container_tree

pytestmark = pytest.mark.live

PFX = "vmixt-mvid-"
NAME = PFX + "u"
HERE = Path("/var/tmp/vmixt-mvid-h1")   # the source host's storage
THERE = Path("/var/tmp/vmixt-mvid-h2")  # the target's (written only over ssh)
TARGET_UID = 1376256 + 7 * 65536        # a range of the target, not the source's


def _clean(conn) -> None:
    cleanup_domains(conn, PFX)
    for root in (HERE, THERE):
        st = Storage(root)
        for name in st.container_names() if root.exists() else []:
            with contextlib.suppress(VirtmixError):
                remove_container_tree(st, name)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def container(lxc_conn, monkeypatch):
    monkeypatch.setenv("VIRTMIX_IDMAP", "isolated")  # its own range, not the shared one
    _clean(lxc_conn)
    HERE.mkdir(mode=0o755)
    vm("create", NAME, "--template", "busybox", "--storage", str(HERE), timeout=120)
    vm("start", NAME)
    wait_for(lambda: lxc_run(NAME, ["true"]).returncode == 0, 15, "busybox init")
    yield json.loads((HERE / "containers" / NAME / "state.json").read_text())["idmap"]
    _clean(lxc_conn)


def _inside(argv: list[str]) -> str:
    res = lxc_run(NAME, argv)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_unprivileged_container_moves_to_another_range(container, lxc_conn, monkeypatch,
                                                       loopback_ssh):  # noqa: F811
    src_uid, src_gid = container[1], container[3]
    assert TARGET_UID not in (src_uid, src_gid)
    # Files owned across the range, from inside: root, a user, a setuid binary, a symlink.
    _inside(["/bin/sh", "-c", "mkdir -p /home/u && echo hi > /home/u/f && "
             "chown -R 1000:1000 /home/u && ln -s /home/u/f /home/u/l && "
             "chown -h 1001:1002 /home/u/l && cp /bin/busybox /root/suid && "
             "chmod 4755 /root/suid && sync"])
    uri = loopback_ssh.uri()
    rec = lxc_conn.lookupByName(NAME)
    uuid, xml = rec.UUIDString(), rec.XMLDesc(2)  # the persistent definition
    src_tree = str(HERE / "containers" / NAME / "rootfs")
    dst_tree = str(THERE / "containers" / NAME / "rootfs")
    rendered = (xml.replace(src_tree, dst_tree)
                .replace(f"target='{src_uid}'", f"target='{TARGET_UID}'")
                .replace(f"target='{src_gid}'", f"target='{TARGET_UID}'"))
    q = shlex.quote
    hooks = TreeHooks(
        prepare=lambda p: run_remote(uri, f"mkdir -p -m 0755 {q(str(THERE))} && "
                                          f"mkdir -p {q(os.path.dirname(p))}"),
        drop_target=lambda p: run_remote(uri, f"rm -rf {q(str(THERE))}"),
        drop_source=lambda p: remove_container_tree(Storage(HERE), NAME))
    # Between the live and the frozen pass (the copy shifted already, the container still
    # running), a user appears with an id nothing has mapped: only the frozen pass's list
    # can bring it to the target's range (the shift over ssh, inside the downtime).
    from virtmix.converge import move as move_mod

    def between(point: str) -> None:
        if point == "move-shifted-live":
            new = os.path.join(src_tree, "home/u/new")
            with open(new, "w") as f:
                f.write("made between the passes\n")
            os.lchown(new, src_uid + 4000, src_gid + 4000)

    monkeypatch.setattr(move_mod, "fault_point", between)
    with open_connection("lxc:///system") as src, open_connection(uri) as dst:
        moved = move_container(src, dst, NAME, rendered, hooks)
    print(f"moved: downtime {moved.downtime:.2f}s, live copy {moved.live_copy:.2f}s, "
          f"frozen copy {moved.frozen_copy:.2f}s, shift {moved.shift:.2f}s, "
          f"total {moved.total:.1f}s; notes {moved.notes}")
    assert moved.state == "running" and moved.shift > 0
    assert 0 < moved.shift_frozen < moved.shift  # the most of it while it ran
    dom = lxc_conn.lookupByName(NAME)
    assert dom.isActive() and dom.UUIDString() == uuid
    assert f"<source dir='{dst_tree}'/>" in dom.XMLDesc(0)
    assert f"target='{TARGET_UID}'" in dom.XMLDesc(0)
    # One daemon: the mark that let a rerun finish the move (state before, old tree) went
    # from its definition (the running instance, started from the marked one, keeps it in
    # its live XML until its next start; virtmix reads the persistent one).
    assert "xmlns/move/1" not in dom.XMLDesc(2)
    assert not os.path.exists(src_tree)  # the source's tree went once it ran there

    # Inside, every file has the owner it had; outside, they are the target's range.
    wait_for(lambda: lxc_run(NAME, ["true"]).returncode == 0, 15, "busybox init there")
    assert _inside(["stat", "-c", "%u:%g", "/", "/home/u/f", "/root/suid"]).split() == [
        "0:0", "1000:1000", "0:0"]
    assert _inside(["stat", "-c", "%u:%g %a", "/home/u/l"]) == "1001:1002 777"
    assert _inside(["stat", "-c", "%a", "/root/suid"]) == "4755"
    assert _inside(["cat", "/home/u/f"]) == "hi"
    st = os.lstat(os.path.join(dst_tree, "home/u/f"))
    assert (st.st_uid, st.st_gid) == (TARGET_UID + 1000, TARGET_UID + 1000)
    assert os.lstat(os.path.join(dst_tree, "home/u/l")).st_uid == TARGET_UID + 1001
    assert _inside(["stat", "-c", "%u:%g", "/home/u/new"]) == "4000:4000"
    assert os.lstat(os.path.join(dst_tree, "home/u/new")).st_uid == TARGET_UID + 4000
