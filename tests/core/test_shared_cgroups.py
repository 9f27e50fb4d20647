"""util/shared_cgroups.py: what ended container runs left in the shared v1 hierarchies
(fake hierarchies of plain directories; the live test checks the real ones)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from virtmix.util import shared_cgroups


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def _tree(root: Path, *groups: str) -> None:
    for g in groups:
        (root / g).mkdir(parents=True, exist_ok=True)


def test_only_the_named_containers_ended_runs_are_removed(tmp_path):
    sd, pids = tmp_path / "systemd", tmp_path / "pids"
    dead = _dead_pid()
    live = os.getpid()  # alive, but not a libvirt_lxc: a reused pid counts as ended
    _tree(sd, f"machine/lxc-{dead}-web.libvirt-lxc/system.slice/cron.service",
          f"machine/lxc-{dead}-web.libvirt-lxc/init.scope",
          f"lxc-{live}-web.libvirt-lxc/init.scope",     # the idmapped fallback at the top
          f"machine/lxc-{dead}-b-web.libvirt-lxc",      # another container ("b-web")
          f"machine/lxc-{dead}-web2.libvirt-lxc",       # and another ("web2")
          "system.slice/cron.service", "init.scope")    # not virtmix's groups
    _tree(pids, f"machine/lxc-{dead}-web.libvirt-lxc/init.scope")
    roots = (str(sd), str(pids), str(tmp_path / "absent"))
    stale = shared_cgroups.stale_groups("web", roots)
    assert sorted(str(p.relative_to(tmp_path)) for p in stale) == sorted([
        f"systemd/machine/lxc-{dead}-web.libvirt-lxc", f"systemd/lxc-{live}-web.libvirt-lxc",
        f"pids/machine/lxc-{dead}-web.libvirt-lxc"])
    assert shared_cgroups.sweep("web", roots) == 3
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == sorted([
        "pids", "pids/machine", "systemd", "systemd/machine", "systemd/init.scope",
        f"systemd/machine/lxc-{dead}-b-web.libvirt-lxc",
        f"systemd/machine/lxc-{dead}-web2.libvirt-lxc",
        "systemd/system.slice", "systemd/system.slice/cron.service"])
    assert shared_cgroups.sweep("web", roots) == 0


def test_a_running_controllers_groups_are_kept(tmp_path):
    # a process whose command line is a libvirt_lxc's for "web": its run has not ended
    proc = subprocess.Popen(["/usr/lib/libvirt/libvirt_lxc", "-c", "import time; time.sleep(30)",
                             "--name", "web", "--console", "3"], executable=sys.executable)
    try:
        deadline = time.monotonic() + 10  # until the fork has exec'd
        while b"libvirt_lxc" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sd = tmp_path / "systemd"
        _tree(sd, f"machine/lxc-{proc.pid}-web.libvirt-lxc/init.scope")
        assert shared_cgroups.controller_alive(proc.pid, "web")
        assert not shared_cgroups.controller_alive(proc.pid, "db")
        assert shared_cgroups.sweep("web", (str(sd),)) == 0
        assert shared_cgroups.remove_run("web", proc.pid, (str(sd),), wait=0.1) == 0
        assert (sd / f"machine/lxc-{proc.pid}-web.libvirt-lxc/init.scope").is_dir()
    finally:
        proc.kill()
        proc.wait()
    assert shared_cgroups.sweep("web", (str(sd),)) == 1


def test_a_group_that_cannot_go_is_left_and_not_counted(tmp_path):
    sd = tmp_path / "systemd"
    g = sd / f"machine/lxc-{_dead_pid()}-web.libvirt-lxc"
    _tree(sd, str(g.relative_to(sd)) + "/init.scope")
    (g / "init.scope/tasks").write_text("")  # like a group with a process: rmdir fails
    assert shared_cgroups.sweep("web", (str(sd),)) == 0
    assert (g / "init.scope").is_dir()


def test_the_run_destroyed_is_removed_without_listing_the_others(tmp_path):
    sd, pids = tmp_path / "systemd", tmp_path / "pids"
    dead = _dead_pid()
    _tree(sd, f"machine/lxc-{dead}-web.libvirt-lxc/system.slice/cron.service",
          f"lxc-{dead}-web.libvirt-lxc/init.scope", "machine/lxc-1-web.libvirt-lxc")
    _tree(pids, f"machine/lxc-{dead}-web.libvirt-lxc/init.scope")
    assert shared_cgroups.remove_run("web", dead, (str(sd), str(pids))) == 3
    # another run of the same container (another controller pid) is not this one's
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "pids", "pids/machine", "systemd", "systemd/machine",
        "systemd/machine/lxc-1-web.libvirt-lxc"]
    assert shared_cgroups.remove_run("web", dead, (str(sd), str(pids))) == 0
