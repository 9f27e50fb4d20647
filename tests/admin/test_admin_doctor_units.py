"""Doctor checks on this machine and the cgroup mount table they read."""

from __future__ import annotations

from virtmix.admin import doctor
from virtmix.hosts import cgroupfs


def test_cgroup_dirs_of_this_process_exist():
    dirs = cgroupfs.cgroup_dirs(1)
    assert dirs, "no cgroup hierarchy found for pid 1"
    assert all(p.is_dir() for p in dirs.values())


def test_storage_check_walks_up_to_an_existing_parent(tmp_path):
    check = doctor.check_storage(str(tmp_path / "not" / "yet"))
    assert check.status in (doctor.OK, doctor.WARN, doctor.FAIL)
    assert "not created yet" in check.detail and "GiB free" in check.detail


def test_unreachable_uri_fails():
    (check,) = doctor.check_connection("test:///nonexistent/node.xml")
    assert check.status == doctor.FAIL and check.fix


def test_every_check_has_a_fix_when_not_ok():
    for check in doctor.run_checks(["test:///default"], "/var/tmp", True):
        assert check.status in (doctor.OK, doctor.WARN, doctor.FAIL)
        if check.status != doctor.OK:
            assert check.fix, check
