"""The id shift of a move split around the downtime (issue 13): the live copy shifted while
the container runs (reporting the source-range ids it met), the frozen rsync pass mapping
owners itself (--usermap/--groupmap strings) and listing what it changed, and the shift of
exactly those listed entries. Real rsync, lchown, xattrs, setcap (when installed) in tmp
dirs, as root."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from virtmix.converge.move import (
    FLOOR_IDS,
    MAP_LIMIT,
    ListedShift,
    Shift,
    id_map,
    shift_tree_at,
)
from virtmix.hosts.sync import changed_paths, sync_tree, sync_tree_listed
from virtmix.rootfs import idmap

SRC, DST, COUNT = 100000, 1376256, 65536
GSRC, GDST = SRC + 7 * COUNT, DST + 3 * COUNT  # gids in ranges of their own
SHIFT = Shift((SRC, GSRC), (DST, GDST), COUNT)
HERE = "lxc:///system"
CAP, ACL = "security.capability", "system.posix_acl_access"
UNDEF = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NEWLINE_NAME = "new\nline"
ODD_NAME = b"bad-\xff-utf8\\#012"  # not UTF-8, and a backslash rsync must escape


def _acl(user: int, group: int) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in (
        (USER_OBJ, 7, UNDEF), (USER, 5, user), (GROUP_OBJ, 5, UNDEF), (GROUP, 5, group),
        (MASK, 7, UNDEF), (OTHER, 0, UNDEF)))


def _v3(root: int) -> bytes:
    return struct.pack("<IIIIII", 0x03000000 | 1, 1 << 13, 0, 0, 0, root)


def _set_acl(path: Path, user: int, group: int) -> bool:
    try:
        os.setxattr(path, ACL, _acl(user, group))
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise
    return True


def _make(path: Path, uid: int, gid: int, mode: int = 0o644, text: str = "x") -> Path:
    path.write_text(text)
    os.lchown(path, uid, gid)
    os.chmod(path, mode)  # after: a chown clears setuid
    return path


def _source(root: Path) -> bool:
    """A tree owned across the source range as a Debian one is: system ids, a user, an id
    past the floor (5000), nobody, setuid, caps v2 and v3, an ACL, odd names."""
    root.mkdir()
    os.chown(root, SRC, GSRC)
    _make(root / "etc", SRC, GSRC)
    _make(root / "sudo", SRC, GSRC + 42, 0o4755 | stat.S_ISGID)
    ping = _make(root / "ping", SRC, GSRC, 0o755)
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(ping)], check=True)
    else:
        os.setxattr(ping, CAP, struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    os.setxattr(_make(root / "nscd", SRC, GSRC, 0o755), CAP, _v3(SRC))
    (root / "home").mkdir()
    os.chown(root / "home", SRC + 1000, GSRC + 1000)
    os.chmod(root / "home", 0o2775)
    acls = _set_acl(root / "home", SRC + 1001, GSRC + 50)
    _make(root / "home" / "far", SRC + 5000, GSRC + 5001)
    _make(root / "nobody", SRC + 65534, GSRC + 65534)
    _make(root / NEWLINE_NAME, SRC + 1000, GSRC + 1000)
    odd = os.path.join(os.fsencode(root), ODD_NAME)
    with open(odd, "w") as f:
        f.write("odd")
    os.lchown(odd, SRC + 6000, GSRC + 6000)
    os.symlink("/etc/passwd", root / "link")
    os.lchown(root / "link", SRC + 1000, GSRC + 1000)
    _make(root / "outside", 4242, 4242)  # no id of the range: kept as is
    return acls


def _u(i: int) -> int:
    return i - SRC + DST if SRC <= i < SRC + COUNT else i


def _g(i: int) -> int:
    return i - GSRC + GDST if GSRC <= i < GSRC + COUNT else i


def _xattr(path: bytes, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM):
            return None
        raise


def _assert_shifted_copy(src: Path, dst: Path) -> int:
    """Every entry of dst is src's, with its ids (owner, group, ACL entries, a v3
    capability's root) moved to the target's ranges; the same modes and contents."""
    n = 0
    for d, dirs, files in os.walk(os.fsencode(src)):
        for name in [b"", *dirs, *files]:
            a = os.path.join(d, name) if name else d
            b = os.path.join(os.fsencode(dst), os.path.relpath(a, os.fsencode(src)))
            sa, sb = os.lstat(a), os.lstat(b)
            assert (sb.st_uid, sb.st_gid) == (_u(sa.st_uid), _g(sa.st_gid)), b
            assert sb.st_mode == sa.st_mode, b
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b)
                n += 1
                continue
            acl = _xattr(a, ACL)
            if acl is not None:
                ids = [struct.unpack_from("<HHI", acl, i) for i in range(4, len(acl), 8)]
                want = [_u(x) if t == USER else _g(x) if t == GROUP else x for t, _p, x in ids]
                got = _xattr(b, ACL)
                assert got is not None
                assert [struct.unpack_from("<I", got, i + 4)[0]
                        for i in range(4, len(got), 8)] == want, b
            cap = _xattr(a, CAP)
            if cap is not None and len(cap) == 24:
                cap = cap[:20] + struct.pack("<I", _u(struct.unpack_from("<I", cap, 20)[0]))
            assert _xattr(b, CAP) == cap, b
            if stat.S_ISREG(sa.st_mode):
                assert open(a, "rb").read() == open(b, "rb").read()
            n += 1
    return n


def _maps(uids, gids) -> dict[str, str]:
    return {"usermap": id_map(SRC, DST, COUNT, uids), "groupmap": id_map(GSRC, GDST, COUNT, gids)}


def test_the_live_shift_reports_the_source_range_ids_it_met(tmp_path):
    src = tmp_path / "src"
    acls = _source(src)
    seen: idmap.Seen = (set(), set())
    idmap.shift_tree(src, DST, COUNT, gid_offset=GDST, source=SRC, gid_source=GSRC,
                     seen=seen)
    assert seen[0] == {0, 1000, 5000, 6000, 65534} | ({1001} if acls else set())
    assert seen[1] == {0, 42, 1000, 5001, 6000, 65534} | ({50} if acls else set())
    # ...and through shift_tree_at here (a whole tree): the same, with the time taken.
    src2 = tmp_path / "src2"
    _source(src2)
    done = shift_tree_at(HERE, str(src2), SHIFT)
    assert (done.uids, done.gids) == (frozenset(seen[0]), frozenset(seen[1]))
    assert done.changed == 11 and done.seconds > 0  # all but `outside`


def test_usermap_strings_name_ids_one_by_one_floor_first_and_stay_short():
    m = id_map(SRC, DST, COUNT)
    pairs = m.split(",")
    assert pairs[:2] == [f"{SRC}:{DST}", f"{SRC + 1}:{DST + 1}"]
    assert len(pairs) == FLOOR_IDS + 1 and pairs[-1] == f"{SRC + 65534}:{DST + 65534}"
    assert "-" not in m  # never a LOW-HIGH range: rsync would map it to ONE id
    # Seen ids come after the floor; duplicates and ids outside the range are dropped.
    m = id_map(SRC, DST, COUNT, [5, 5000, 5000, 70000, -1, 65534])
    assert m.split(",")[FLOOR_IDS + 1:] == [f"{SRC + 5000}:{DST + 5000}"]
    # Privileged to a range and back: 0.. is a source like any other.
    assert id_map(0, DST, COUNT).startswith(f"0:{DST},1:{DST + 1},")
    assert id_map(SRC, 0, COUNT).startswith(f"{SRC}:0,{SRC + 1}:1,")
    # A range smaller than the floor: only its ids.
    assert id_map(SRC, DST, 10).split(",") == [f"{SRC + i}:{DST + i}" for i in range(10)]
    # Every id of the range seen: cut at MAP_LIMIT (a remote rsync gets both maps in one
    # `sh -c` argument, at most 128 KiB), the floor kept.
    big = id_map(SRC, DST, COUNT, range(COUNT))
    assert MAP_LIMIT - 20 < len(big) <= MAP_LIMIT and big.startswith(m.split(",")[0])
    assert f"{SRC + 65534}:{DST + 65534}" in big


def test_rsync_usermap_works_with_numeric_ids_but_not_for_acls_or_capabilities(tmp_path):
    """What the design rests on, checked against this rsync: owners are mapped with
    --numeric-ids; ACL named entries and a v3 capability's root are copied raw (so they
    must be, and are, listed and shifted after)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    acls = _source(src)
    sync_tree(HERE, str(src), HERE, str(dst), **_maps({5000, 6000}, {5001, 6000}))
    st = os.lstat(dst / "home" / "far")
    assert (st.st_uid, st.st_gid) == (DST + 5000, GDST + 5001)
    assert os.lstat(dst / "sudo").st_mode & stat.S_ISUID
    assert struct.unpack_from("<I", os.getxattr(dst / "nscd", CAP), 20)[0] == SRC
    if acls:
        assert struct.unpack_from("<I", os.getxattr(dst / "home", ACL), 16)[0] == SRC + 1001


def test_rsync_listing_is_read_back_with_any_name():
    out = (b"cd+++++++++ ./\n>f+++++++++ new\\#012line\n>f.st...... back\\#134#012x\n"
           b"*deleting   gone\ncL+++++++++ link\n.d..t...... dir/\nhf+++++++++ hard\n"
           b"created directory dst\n.f....og... \xff-not-utf8\n.d.......a.  lead space/\n")
    assert changed_paths(out) == [b"./", b"new\nline", b"back\\#012x", b"link", b"dir/",
                                  b"hard", b"\xff-not-utf8", b" lead space/"]


def test_a_move_copy_shifted_live_then_frozen_with_the_map_ends_exact(tmp_path):
    """The whole sequence of a move, here: live copy (floor map), shift while it runs,
    changes on the source (a new id past the floor, an ACL, a rewritten capability file,
    an owner change to an id never seen), the frozen copy with the map listing what it
    changed, the listed shift. The copy equals a full shift of the source; the frozen pass
    listed only what changed, and an unchanged source lists nothing."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    acls = _source(src)
    sync_tree(HERE, str(src), HERE, str(dst), **_maps((), ()))
    live = shift_tree_at(HERE, str(dst), SHIFT)
    assert 5000 in live.uids and 5001 in live.gids
    # The floor (ids 0..999, 65534) was mapped by rsync as it copied: the shift never met
    # those owners (uid 0 only as the v3 capability's root); 1000 is past the floor.
    assert 42 not in live.gids and 65534 not in live.uids and 1000 in live.uids
    _assert_shifted_copy(src, dst)

    # Between the passes, in the running container:
    _make(src / "home" / "newuser", SRC + 7000, GSRC + 7000)  # useradd: an id none named
    os.lchown(src / "etc", SRC + 8000, GSRC + 8000)           # chown to another new one
    if acls:
        _set_acl(src / "home", SRC + 1002, GSRC + 51)
    nscd = _make(src / "nscd", SRC, GSRC, 0o755, "upgraded")    # a package upgrade
    os.setxattr(nscd, CAP, _v3(SRC))
    _make(src / NEWLINE_NAME, SRC + 1000, GSRC + 1000, text="changed")

    seconds, listed = sync_tree_listed(HERE, str(src), HERE, str(dst),
                                       **_maps(live.uids, live.gids))
    assert seconds > 0
    assert set(listed) >= {b"home/newuser", b"etc", b"nscd", NEWLINE_NAME.encode()}
    assert b"home/far" not in listed and os.fsencode(ODD_NAME) not in listed  # unchanged
    fixed = ListedShift(HERE, str(dst), SHIFT).run(listed)
    assert fixed.changed >= 3  # newuser, etc (ids never mapped), nscd's capability root
    assert _assert_shifted_copy(src, dst) == 14

    # Frozen again with nothing changed: with the new ids in the map, rsync lists only what
    # carries ids it copies raw (an ACL, a v3 capability's root), and they are shifted again.
    uids, gids = live.uids | {7000, 8000}, live.gids | {7000, 8000}
    _, listed = sync_tree_listed(HERE, str(src), HERE, str(dst), **_maps(uids, gids))
    assert sorted(listed) == [b"home/"] * acls + [b"nscd"]
    ListedShift(HERE, str(dst), SHIFT).run(listed)
    assert _assert_shifted_copy(src, dst) == 14


def test_a_capability_root_is_fixed_when_the_owner_is_right_already(tmp_path):
    """rsync, mapping the owner, writes a v3 capability back with the source's root: the
    shift of that entry must fix the root though owner and group need nothing."""
    f = _make(tmp_path / "nscd", DST, GDST, 0o755)
    os.setxattr(f, CAP, _v3(SRC))
    assert idmap.shift_paths(tmp_path, [b"nscd"], DST, COUNT, gid_offset=GDST, source=SRC,
                             gid_source=GSRC) == 1
    assert os.getxattr(f, CAP) == _v3(DST)
    assert idmap.shift_paths(tmp_path, [b"nscd"], DST, COUNT, gid_offset=GDST, source=SRC,
                             gid_source=GSRC) == 0  # idempotent


def test_listed_paths_never_lead_out_of_the_tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    victim = _make(outside / "victim", SRC, GSRC)
    os.symlink(outside, root / "escape")
    inside = _make(root / "f", SRC, GSRC)
    n = idmap.shift_paths(root, [b"escape/victim", b"../outside/victim", b"missing", b"f",
                                 b"./"], DST, COUNT, gid_offset=GDST, source=SRC,
                          gid_source=GSRC)
    assert n == 1 and os.lstat(inside).st_uid == DST
    assert os.lstat(victim).st_uid == SRC  # not through the symlink, not through ..
    assert os.lstat(root).st_uid == 0  # "./" is root: outside the range, left alone


def _odd_entries(root: Path) -> tuple[Path, bytes, Path]:
    """Under root (made): a file named with a newline, one whose name is not UTF-8, both in
    the source range, and one that is never listed."""
    root.mkdir()
    a = _make(root / NEWLINE_NAME, SRC + 3, GSRC + 4)
    b = os.path.join(os.fsencode(root), ODD_NAME)
    open(b, "w").close()
    os.lchown(b, SRC + 5, GSRC + 6)
    return a, b, _make(root / "not-listed", SRC, GSRC)


def _listed_there(root: Path, paths: list[bytes], env: dict[str, str] | None = None,
                  python: tuple[str, ...] = ("/usr/bin/python3", "-I")
                  ) -> subprocess.CompletedProcess[bytes]:
    """What ListedShift runs on a far host, run here: remote_script(stdin=True) started by
    BOOT, then the NUL-separated list on its stdin."""
    script = idmap.remote_script(str(root), (DST, GDST), (SRC, GSRC), COUNT,
                                 stdin=True).encode()
    return subprocess.run([*python, "-c", idmap.BOOT], cwd="/", capture_output=True,
                          env=env or {"PATH": "/usr/bin:/bin"}, check=False,
                          input=b"%d\n" % len(script) + script + b"\0".join(paths))


def test_the_listed_shift_for_another_host_carries_any_name(tmp_path):
    """The far host's listed shift reads its list on stdin, NUL-separated: names with a
    newline or bytes that are not UTF-8 included."""
    root = tmp_path / "t"
    a, b, c = _odd_entries(root)
    res = _listed_there(root, [NEWLINE_NAME.encode(), ODD_NAME])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"changed": 2}
    assert (os.lstat(a).st_uid, os.lstat(a).st_gid) == (DST + 3, GDST + 4)
    assert (os.lstat(b).st_uid, os.lstat(b).st_gid) == (DST + 5, GDST + 6)
    assert os.lstat(c).st_uid == SRC
    # An empty list shifts nothing (not the root).
    os.chown(root, SRC, GSRC)
    res = _listed_there(root, [])
    assert json.loads(res.stdout) == {"changed": 0} and os.lstat(root).st_uid == SRC


@pytest.mark.parametrize("uri", ["lxc+ssh://root@nowhere.invalid/system"])
def test_a_remote_shift_that_prints_no_json_is_an_error(uri, monkeypatch):
    from virtmix.errors import BackendError
    from virtmix.hosts import ssh

    def run_argv(argv, label, **kw):
        return subprocess.CompletedProcess(argv, 0, "Traceback (most recent call last)\n", "")

    monkeypatch.setattr(ssh, "run_argv", run_argv)
    with pytest.raises(BackendError, match="not the JSON the shift prints"):
        shift_tree_at(uri, "/t", SHIFT)


# Modules Debian's python3-minimal lacks (libpython3.11-stdlib has them), which a guest
# virtmix builds with `packages: [rsync, python3-minimal]` does not have: json broke the
# first run of this design in such a guest.
NOT_MINIMAL = ("json", "shutil", "dataclasses", "pprint", "tarfile", "uuid")


def _minimal_python(tmp_path: Path) -> dict[str, str]:
    """An environment whose python3 refuses NOT_MINIMAL imports (a sitecustomize on
    PYTHONPATH) and cannot import virtmix."""
    site = tmp_path / "minimal-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NotMinimal:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {NOT_MINIMAL!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (python3-minimal)')\n"
        "sys.meta_path.insert(0, _NotMinimal())\n")
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}


def test_the_remote_scripts_need_only_python3_minimal(tmp_path):
    """Both remote_script modes run in a python3 without json & co, from /: the whole
    tree (with its id report), and the paths on stdin (one, then another)."""
    env = _minimal_python(tmp_path)
    probe = subprocess.run(["/usr/bin/python3", "-c", "import json"], env=env, cwd="/",
                           capture_output=True, text=True, check=False)
    assert "python3-minimal" in probe.stderr  # the blocker works
    root = tmp_path / "t"
    root.mkdir()
    f = _make(root / "f", SRC + 1, GSRC + 2)
    g = _make(root / "g", SRC + 3, GSRC + 4)
    h = _make(root / "h", SRC + 5, GSRC + 6)
    res = _listed_there(root, [b"f"], env, ("/usr/bin/python3",))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"changed": 1} and os.lstat(f).st_uid == DST + 1
    res = _listed_there(root, [b"g", b""], env, ("/usr/bin/python3",))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"changed": 1} and os.lstat(g).st_uid == DST + 3
    script = idmap.remote_script(str(root), (DST, GDST), (SRC, GSRC), COUNT)
    res = subprocess.run(["/usr/bin/python3", "-"], input=script, env=env, cwd="/",
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"changed": 1, "uids": [5], "gids": [6]}
    assert os.lstat(h).st_uid == DST + 5


def _as_remote(monkeypatch, tmp_path: Path) -> str:
    """An ssh URI whose "ssh" is this machine's sh: the command line a remote host's shell
    would run runs here, by a python3-minimal-like python3 that cannot import virtmix."""
    from virtmix.hosts import ssh

    monkeypatch.setattr(ssh, "ssh_argv", lambda uri, **kw: ["/bin/sh", "-c"])
    for k, v in _minimal_python(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir("/")
    return "lxc+ssh://root@far.invalid/system"


def test_the_remote_listed_shift_is_started_before_and_fed_the_list_after(tmp_path,
                                                                         monkeypatch):
    """ListedShift starts the far host's python3 before the freeze (it waits on stdin);
    run() then sends the NUL-separated list and reads its JSON; any name survives."""
    from virtmix.converge.move import ListedShift

    uri = _as_remote(monkeypatch, tmp_path)
    root = tmp_path / "t"
    a, b, c = _odd_entries(root)
    ready = ListedShift(uri, str(root), SHIFT)
    try:
        assert ready.proc is not None and ready.proc.poll() is None  # started, waiting
        done = ready.run([NEWLINE_NAME.encode(), ODD_NAME, b"gone"])
    finally:
        ready.close()
    assert done.changed == 2 and done.seconds > 0
    assert (os.lstat(a).st_uid, os.lstat(a).st_gid) == (DST + 3, GDST + 4)
    assert (os.lstat(b).st_uid, os.lstat(b).st_gid) == (DST + 5, GDST + 6)
    assert os.lstat(c).st_uid == SRC
    # Not reached (a failure before the frozen copy ended): close() ends it, nothing shifted.
    unused = ListedShift(uri, str(root), SHIFT)
    unused.close()
    assert unused.proc is not None and unused.proc.returncode is not None
    assert os.lstat(c).st_uid == SRC
    # And the whole-tree shift over "ssh" reports the ids as JSON, as here.
    live = shift_tree_at(uri, str(root), SHIFT)
    assert (live.changed, live.uids, live.gids) == (1, {0}, {0})  # not-listed
    assert os.lstat(c).st_uid == DST


def test_a_remote_listed_shift_that_fails_says_why(tmp_path, monkeypatch):
    from virtmix.converge.move import ListedShift
    from virtmix.errors import BackendError

    uri = _as_remote(monkeypatch, tmp_path)
    root = tmp_path / "t"
    root.mkdir()
    _make(root / "f", SRC, GSRC)
    os.chmod(root, 0o755)
    ready = ListedShift(uri, str(tmp_path / "missing"), SHIFT)
    try:
        with pytest.raises(BackendError, match="(?s)exited 1: .*FileNotFoundError"):
            ready.run([b"f"])
    finally:
        ready.close()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_the_map_and_the_listing_work_with_the_far_end_over_an_rsh(tmp_path, monkeypatch,
                                                                   direction):
    """To (or from) an ssh host rsync runs its other end through `-e`: here an "ssh" that
    runs the far command on this machine. The map reaches the receiver (far when pushing),
    and the changes it made are listed on this side, escapes undone."""
    from virtmix.hosts import ssh

    rsh = tmp_path / "rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')  # rsh HOST COMMAND...
    rsh.chmod(0o755)
    monkeypatch.setattr(ssh, "ssh_argv", lambda uri, **kw: [str(rsh), "--", "far"])
    far = "lxc+ssh://root@far.invalid/system"
    src, dst = tmp_path / "src", tmp_path / "dst"
    _source(src)
    ends = (HERE, str(src), far, str(dst)) if direction == "push" else \
        (far, str(src), HERE, str(dst))
    sync_tree(*ends, **_maps((), ()))
    assert os.lstat(dst / "etc").st_uid == DST  # the floor, mapped by the receiver
    assert os.lstat(dst / "home" / "far").st_uid == SRC + 5000  # not in the map
    _make(src / NEWLINE_NAME, SRC + 7000, GSRC + 7000, text="changed")
    _, listed = sync_tree_listed(*ends, **_maps({5000}, {5001}))
    assert sorted(listed) == sorted([NEWLINE_NAME.encode(), b"home/far"])
    assert os.lstat(dst / "home" / "far").st_uid == DST + 5000
