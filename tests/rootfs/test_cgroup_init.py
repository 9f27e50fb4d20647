"""The base's init wrapper (rootfs/cgroup_init.py), run for real as pid 1 of a new pid
namespace (`unshare --pid --fork`), on a /proc and a cgroup tree faked in plain files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from virtmix.rootfs import cgroup_init

MACHINE = "/machine/lxc-4242-web.libvirt-lxc"
V1 = f"""\
9:name=systemd:/
8:pids:/
4:memory:{MACHINE}
1:cpu:{MACHINE}
0::/
"""
MOUNTS = """\
185 184 0:64 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
186 185 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
202 185 0:37 {root} {top} rw,relatime - cgroup cgroup rw,name=systemd
"""

# what the "real init" (python) prints: its pid and arguments, and its argv[0]
REAL_INIT = ('import os, sys; print("real", os.getpid(), *sys.argv[1:]); '
             'print("as", open("/proc/self/cmdline").read().split(chr(0))[0])')

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare(1) for a pid namespace")


def _run(tmp: Path, cgroup: str, *, root: str = "/", pid1: bool = True,
         fstype: str = "cgroup") -> tuple[Path, str]:
    """Run the wrapper with `cgroup` as its /proc/self/cgroup; returns the fake hierarchy
    and what the 'real init' printed."""
    proc, top = tmp / "proc", tmp / "cg"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    top.mkdir(exist_ok=True)
    (proc / "self/cgroup").write_text(cgroup)
    mounts = MOUNTS.format(root=root, top=top)
    if fstype != "cgroup":
        mounts = mounts.replace("- cgroup cgroup rw,name=systemd", f"- {fstype} {fstype} rw")
    (proc / "self/mountinfo").write_text(mounts)
    real = tmp / "real-init"  # a binary, as systemd is: `exec -a` sets its argv[0]
    if not real.exists():
        real.symlink_to(sys.executable)
    wrapper = tmp / "init"
    wrapper.write_text(cgroup_init.init_script(str(real), proc=str(proc), top=str(top)))
    wrapper.chmod(0o755)
    argv = [str(wrapper), "-c", REAL_INIT, "--system", "x y"]
    if pid1:
        argv = ["unshare", "--pid", "--fork", "--", *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    return top, res.stdout + res.stderr


def _groups(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_dir())


def test_joins_a_group_named_after_libvirts_machine_group_then_execs_systemd(tmp_path):
    top, out = _run(tmp_path, V1)
    assert (top / MACHINE.lstrip("/") / "cgroup.procs").read_text() == "1\n"
    assert _groups(top) == ["machine", MACHINE.lstrip("/")]
    # exec'd, not forked: the real init is still pid 1, with the arguments as given and
    # the wrapper's name as its own (ps shows /sbin/init, not /sbin/init.distrib)
    assert out == f"real 1 --system x y\nas {tmp_path / 'init'}\n"


def test_an_unwritable_machine_dir_falls_back_to_the_same_name_at_the_top(tmp_path):
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg/machine").write_text("")  # mkdir -p of machine/... fails
    top, out = _run(tmp_path, V1)
    assert (top / "lxc-4242-web.libvirt-lxc/cgroup.procs").read_text() == "1\n"
    assert out.startswith("real 1 --system x y\n")


def test_when_neither_can_be_made_systemd_still_starts_with_a_warning(tmp_path):
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg/machine").write_text("")
    (tmp_path / "cg/lxc-4242-web.libvirt-lxc").write_text("")
    top, out = _run(tmp_path, V1)
    assert "virtmix-init: could not join a name=systemd group" in out
    assert "real 1 --system x y\n" in out


@pytest.mark.parametrize("case", ["v2", "placed", "private-mount", "not-cgroup", "no-machine",
                                  "not-pid1"])
def test_a_no_op_where_the_tree_is_not_shared(tmp_path, case):
    cgroup, kw = V1, {}
    if case == "v2":  # a cgroup v2 guest: one line, no name=systemd hierarchy
        cgroup = "0::/init.scope\n"
    elif case == "placed":  # a host whose systemd (machined) placed the container
        cgroup = V1.replace("name=systemd:/", "name=systemd:/machine.slice/x.scope")
    elif case == "private-mount":  # the hierarchy is mounted from a subtree already
        kw = {"root": MACHINE}
    elif case == "not-cgroup":
        kw = {"fstype": "cgroup2"}
    elif case == "no-machine":  # libvirt gave it no group to name its own after
        cgroup = V1.replace(f"cpu:{MACHINE}", "cpu:/")
    else:
        kw = {"pid1": False}
    top, out = _run(tmp_path, cgroup, **kw)
    assert _groups(top) == []
    assert out.startswith("real ") and " --system x y\n" in out


def test_init_path_follows_where_systemd_sysv_installed_it(tmp_path):
    info = tmp_path / "var/lib/dpkg/info"
    assert cgroup_init.init_path(tmp_path) is None  # no systemd-sysv: nothing to wrap
    info.mkdir(parents=True)
    (info / "systemd-sysv.list").write_text("/.\n/sbin\n/sbin/init\n/sbin/halt\n")
    assert cgroup_init.init_path(tmp_path) == "/sbin/init"  # bookworm
    (info / "systemd-sysv.list").write_text("/.\n/usr/sbin/init\n/usr/sbin/halt\n")
    assert cgroup_init.init_path(tmp_path) == "/usr/sbin/init"  # trixie (moved to /usr)
    (tmp_path / "sbin").mkdir()
    assert not cgroup_init.is_wrapped(tmp_path)
    (tmp_path / "sbin/init").write_text(cgroup_init.init_script("/sbin/init.distrib"))
    assert cgroup_init.is_wrapped(tmp_path)
