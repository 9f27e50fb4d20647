"""A moved container's tree shifted from the source's id range to the target's: owners,
setuid bits, file capabilities (v2 and namespaced v3), POSIX ACLs, symlinks (lchown, never
followed), a rerun after a crash mid-shift, and the script that does it on another host."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from virtmix.converge.move import Shift, id_shift
from virtmix.errors import UsageError
from virtmix.rootfs import idmap

SRC, DST, COUNT = 100000, 1376256, 65536
CAP = "security.capability"
ACL = "system.posix_acl_access"


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A posix_acl_access xattr: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _acl_ids(path: Path) -> list[int]:
    blob = os.getxattr(path, ACL, follow_symlinks=False)
    return [struct.unpack_from("<HHI", blob, at)[2] for at in range(4, len(blob), 8)]


UNDEF = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def _tree(root: Path) -> dict[str, Path]:
    """Files owned across the source range, as a moved Debian tree has them."""
    p = {n: root / n for n in ("root", "sudo", "ping", "nscd", "home", "link", "outside",
                               "hard")}
    root.mkdir(0o755)
    os.chown(root, SRC, SRC)
    p["root"].write_text("r")
    os.chown(p["root"], SRC, SRC)
    p["sudo"].write_text("#!/bin/sh\n")
    os.chown(p["sudo"], SRC, SRC + 42)
    os.chmod(p["sudo"], 0o4755 | stat.S_ISGID)
    p["ping"].write_text("#!/bin/sh\n")
    os.chmod(p["ping"], 0o755)
    os.chown(p["ping"], SRC, SRC)
    # cap_net_raw+ep, v2 (what setcap writes on the host)
    os.setxattr(p["ping"], CAP, struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    p["nscd"].write_text("#!/bin/sh\n")
    os.chmod(p["nscd"], 0o755)
    os.chown(p["nscd"], SRC, SRC)
    # v3: set inside a user namespace, it records that namespace's root (host uid SRC)
    os.setxattr(p["nscd"], CAP, struct.pack("<IIIIII", 0x03000000 | 1, 1 << 13, 0, 0, 0, SRC))
    p["home"].mkdir()
    os.chown(p["home"], SRC + 1000, SRC + 1000)
    os.chmod(p["home"], 0o2775)
    p["link"].symlink_to(p["home"])  # absolute: the shift must not follow it
    os.lchown(p["link"], SRC + 1000, SRC + 1000)
    p["outside"].write_text("nobody's")
    os.chown(p["outside"], 4242, 4242)  # not in the range: left alone
    os.link(p["root"], p["hard"])
    return p


def _acls(p: dict[str, Path]) -> bool:
    try:
        os.setxattr(p["home"], ACL, _acl([(USER_OBJ, 7, UNDEF), (USER, 5, SRC + 1001),
                                          (GROUP_OBJ, 5, UNDEF), (GROUP, 5, SRC + 50),
                                          (MASK, 7, UNDEF), (OTHER, 0, UNDEF)]))
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise
    return True


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _check(root: Path, p: dict[str, Path], acls: bool) -> None:
    assert _owner(root) == (DST, DST)
    assert _owner(p["root"]) == _owner(p["hard"]) == (DST, DST)
    assert _owner(p["sudo"]) == (DST, DST + 42)
    assert stat.S_IMODE(os.lstat(p["sudo"]).st_mode) == 0o6755  # setuid, setgid kept
    assert os.lstat(p["home"]).st_mode & stat.S_ISGID  # setgid dir kept
    assert _owner(p["home"]) == (DST + 1000, DST + 1000)
    assert _owner(p["link"]) == (DST + 1000, DST + 1000)  # the link itself (lchown)
    assert os.readlink(p["link"]) == str(p["home"])
    assert _owner(p["outside"]) == (4242, 4242)
    v2 = os.getxattr(p["ping"], CAP)
    assert struct.unpack_from("<II", v2) == (0x02000001, 1 << 13)  # chown dropped it: back
    v3 = os.getxattr(p["nscd"], CAP)
    assert len(v3) == 24 and struct.unpack_from("<I", v3, 20)[0] == DST  # its root moved
    if acls:
        assert _acl_ids(p["home"]) == [UNDEF, DST + 1001, UNDEF, DST + 50, UNDEF, UNDEF]


def test_a_tree_shifted_to_another_range_keeps_everything(tmp_path):
    root = tmp_path / "t"
    p = _tree(root)
    acls = _acls(p)
    changed = idmap.shift_tree(root, DST, COUNT, gid_offset=DST, source=SRC, gid_source=SRC)
    assert changed == 7  # the dir, root/hard (one inode), sudo, ping, nscd, home, link
    _check(root, p, acls)
    # Run again (a rerun after a crash): nothing is in the source range any more.
    assert idmap.shift_tree(root, DST, COUNT, gid_offset=DST, source=SRC,
                            gid_source=SRC) == 0
    _check(root, p, acls)


def test_a_shift_killed_half_way_is_finished_by_a_rerun(tmp_path):
    root = tmp_path / "t"
    p = _tree(root)
    acls = _acls(p)
    # What a kill leaves: some entries shifted, one with its ACL moved but not its owner.
    for name in ("root", "sudo"):
        idmap._shift_one(str(p[name]), os.lstat(p[name]), DST, COUNT, DST, SRC, SRC)
    if acls:
        idmap._shift_acls(str(p["home"]), [ACL],
                          lambda i: i - SRC + DST if SRC <= i < SRC + COUNT
                          else i, lambda i: i - SRC + DST if SRC <= i < SRC + COUNT else i)
    idmap.shift_tree(root, DST, COUNT, gid_offset=DST, source=SRC, gid_source=SRC)
    _check(root, p, acls)


def test_the_script_for_another_host_needs_only_python(tmp_path):
    """remote_script is what `python3 -` runs there over ssh: no virtmix installed."""
    root = tmp_path / "t"
    p = _tree(root)
    acls = _acls(p)
    script = idmap.remote_script(str(root), (DST, DST), (SRC, SRC), COUNT)
    res = subprocess.run(["/usr/bin/python3", "-I", "-"], input=script, capture_output=True,
                         text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 0, res.stderr
    # ...and says which ids of the source range it met (the ACL's named ones too).
    named = ({1001}, {50}) if acls else (set(), set())
    assert json.loads(res.stdout) == {"changed": 7, "uids": sorted({0, 1000} | named[0]),
                                      "gids": sorted({0, 42, 1000} | named[1])}
    _check(root, p, acls)


def _xml(uid: int | None, gid: int | None = None, count: int = COUNT) -> str:
    idm = (f"<idmap><uid start='0' target='{uid}' count='{count}'/>"
           f"<gid start='0' target='{gid if gid is not None else uid}' count='{count}'/>"
           "</idmap>") if uid is not None else ""
    return f"<domain type='lxc'><name>c</name>{idm}</domain>"


def test_which_shift_a_move_needs():
    assert id_shift("c", _xml(SRC), _xml(SRC)) is None
    assert id_shift("c", _xml(None), _xml(None)) is None
    assert id_shift("c", _xml(SRC), _xml(DST)) == Shift((SRC, SRC), (DST, DST), COUNT)
    assert id_shift("c", _xml(SRC, SRC + 7 * COUNT), _xml(DST)) == \
        Shift((SRC, SRC + 7 * COUNT), (DST, DST), COUNT)
    assert id_shift("c", _xml(None), _xml(DST)) == Shift((0, 0), (DST, DST), COUNT)
    assert id_shift("c", _xml(SRC), _xml(None)) == Shift((SRC, SRC), (0, 0), COUNT)
    with pytest.raises(UsageError, match="overlaps the target's"):
        id_shift("c", _xml(SRC), _xml(SRC + 1000))
    with pytest.raises(UsageError, match="ranges of one size"):
        id_shift("c", _xml(SRC), _xml(DST, count=1000))


def test_a_target_without_python3_is_refused_before_anything_moves(monkeypatch):
    """The check runs the same shell line a far host runs; here, with PATH emptied, it finds
    no python3, and the move is refused with what to install."""
    from virtmix.converge import move
    from virtmix.hosts import ssh

    def run_remote(uri, script, timeout=60):
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              env={"PATH": "/nonexistent"}, check=False).stdout

    monkeypatch.setattr(ssh, "run_remote", run_remote)
    with pytest.raises(UsageError, match="needs python3 there") as exc:
        move._check_python_there("lxc+ssh://root@guest/system", "c")
    assert "python3-minimal" in (exc.value.hint or "")
