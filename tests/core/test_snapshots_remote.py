"""Container snapshots on another host (snapshots/remote.py), without ssh: the very scripts
the far host runs, run here by sh (the runner ssh_runner would hand them to ssh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from virtmix.errors import BackendError, ConflictError, NotFoundError, UsageError
from virtmix.snapshots import remote

URI = "lxc+ssh://root@far.example/system"


class Far:
    """Runs what would go over ssh with sh here, and remembers how many scripts ran."""

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def __call__(self, uri: str, script: str, stdin: str | None = None) -> str:
        assert uri == URI
        self.scripts.append(script)
        res = subprocess.run(["sh", "-c", "set -e; " + script], input=stdin or "",
                             capture_output=True, text=True, check=False)
        if res.returncode:
            raise BackendError(f"{uri}: exit {res.returncode}: {res.stderr}")
        return res.stdout


def _tree(root: Path, name: str, *, built: bool = False) -> Path:
    tree = root / "containers" / name / "rootfs" if built else root / "given" / name
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text(f"{name}\n")
    os.symlink("hostname", tree / "etc" / "link")
    os.chown(tree / "etc" / "hostname", 100033, 100044)
    if built:
        (tree.parent / ".virtmix-container").write_text("")
        (tree.parent / "state.json").write_text(json.dumps({"method": "copy"}, indent=2))
    return tree


def test_take_list_restore_remove_there(tmp_path):
    far = Far()
    site_storage = tmp_path / "site"
    built = _tree(tmp_path / "st", "c1", built=True)
    given = _tree(tmp_path, "c2")
    srcs = remote.sources(URI, [str(built), str(given)], [str(site_storage)] * 2, far)
    assert len(far.scripts) == 1  # one round trip per host
    assert srcs[0].storage == str(tmp_path / "st")  # a built tree: its own storage
    assert srcs[1].storage == str(site_storage)     # a given one: the site's

    jobs = [remote.Job(s, n, {"state": "running", "xml": "<domain/>"})
            for s, n in zip(srcs, ["c1", "c2"], strict=True)]
    far.scripts.clear()
    remote.begin(jobs, "s1", far)
    remote.copy(jobs, far)
    remote.commit(jobs, "s1", "2026-12-01T22:00:00+0000", far)
    assert len(far.scripts) == 3
    snap = tmp_path / "st" / "snapshots" / "c1" / "s1"
    assert (snap / "data" / "etc" / "hostname").read_text() == "c1\n"
    st = os.lstat(snap / "data" / "etc" / "hostname")
    assert (st.st_uid, st.st_gid) == (100033, 100044)  # numeric owners kept
    assert os.readlink(snap / "data" / "etc" / "link") == "hostname"
    assert oct(snap.parent.stat().st_mode & 0o777) == "0o700"
    assert (snap / ".virtmix-snapshot").is_file()
    assert not list(snap.parent.glob(".*"))  # no hidden part left
    assert (site_storage / "snapshots" / "c2" / "s1" / "data" / "etc").is_dir()

    listed = remote.list_for(srcs[0], "c1", far)
    assert [m["name"] for m in listed] == ["s1"]
    assert listed[0]["state"] == "running" and listed[0]["xml"] == "<domain/>"
    assert listed[0]["path"] == str(snap) and listed[0]["method"] == "tree"

    with pytest.raises(ConflictError, match="already has a snapshot named 's1'"):
        remote.begin(jobs, "s1", far)

    (built / "etc" / "hostname").write_text("changed\n")
    (built / "new").write_text("x")
    meta = remote.find(srcs[0], "c1", "s1", far)
    swaps = remote.prepare_many([(srcs[0], meta)], far)
    assert (built / "new").exists()  # nothing touched until the swap
    swaps[0].swap_in()
    remote.discard(swaps)
    assert (built / "etc" / "hostname").read_text() == "c1\n"
    assert not (built / "new").exists()
    assert sorted(p.name for p in built.parent.iterdir()) == [
        ".virtmix-container", "rootfs", "state.json"]

    with pytest.raises(NotFoundError, match="no snapshot named 'nope'"):
        remote.find(srcs[0], "c1", "nope", far)
    remote.remove(srcs[0], "c1", "s1", far)
    assert not snap.exists()
    assert remote.list_for(srcs[0], "c1", far) == []


def test_failed_copy_leaves_nothing_and_dead_parts_are_pruned(tmp_path):
    far = Far()
    tree = _tree(tmp_path, "c1")
    src = remote.sources(URI, [str(tree)], [str(tmp_path / "st")], far)[0]
    parent = tmp_path / "st" / "snapshots" / "c1"
    # What a killed virtmix of this machine left (its pid is dead), and another machine's.
    dead = parent / f".s0.part-{remote.tag().rsplit('-', 1)[0]}-999999999"
    other = parent / ".s0.part-otherhost-1"
    for p in (dead, other):
        (p / "data").mkdir(parents=True)
    bad = remote.Job(remote.RemoteSource(URI, src.storage, str(tmp_path / "gone")), "c1", {})
    remote.begin([bad], "s2", far)
    assert not dead.exists() and other.exists()
    with pytest.raises(BackendError):
        remote.copy([bad], far)
    remote.abandon([bad], far)
    assert sorted(p.name for p in parent.iterdir()) == [other.name]
    assert remote.list_for(src, "c1", far) == []


def test_missing_or_overlay_trees_are_refused(tmp_path):
    far = Far()
    with pytest.raises(NotFoundError, match="does not exist on"):
        remote.sources(URI, [str(tmp_path / "nope")], [str(tmp_path)], far)
    tree = _tree(tmp_path / "st", "c3", built=True)
    (tree.parent / "state.json").write_text('{"method": "overlay"}')
    with pytest.raises(UsageError, match="overlay clone"):
        remote.sources(URI, [str(tree)], [str(tmp_path)], far)


def test_snapshot_of_a_container_behind_tls_is_refused():
    from virtmix.admin.targets import Place, Target
    from virtmix.backend.records import DomainRecord
    from virtmix.rootfs.storage import Storage
    from virtmix.snapshots import ops

    rec = DomainRecord(uri="lxc+tls://h/system", name="c", uuid="u", state="running",
                       persistent=True, xml="<domain type='lxc'><name>c</name></domain>")
    t = Target(Place("lxc+tls://h/system", "h"), None, rec)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="over ssh only"):
        ops.take([t], "s1", Storage("/nonexistent"))


def _lxc(name: str, tree: Path) -> str:
    return (f"<domain type='lxc'><name>{name}</name><memory>65536</memory><os><type>exe"
            "</type><init>/sbin/init</init></os><devices><filesystem type='mount'>"
            f"<source dir='{tree}'/><target dir='/'/></filesystem></devices></domain>")


def test_a_site_with_a_member_on_an_ssh_host_is_taken_at_one_moment(tmp_path, monkeypatch):
    """ops with one container here and one behind an ssh URI (its scripts run by sh here,
    its libvirt calls on a test-driver node): both are frozen while each copy runs, both
    thawed after; ls, restore (the state it had, its tree back) and rm reach the far one."""
    from virtmix.admin.targets import Place, Target
    from virtmix.backend import open_connection
    from virtmix.rootfs.storage import Storage
    from virtmix.snapshots import ops, trees

    (tmp_path / "node.xml").write_text("<node/>\n")
    seen: list[tuple[str, str, str]] = []
    far = Far()

    def far_run(uri: str, script: str, stdin: str | None = None) -> str:
        if "cp -a" in script and ".part-" in script:
            seen.append(("far", conn.state("here"), conn.state("far")))
        return far(uri, script, stdin)

    real_copy_all = trees.copy_all

    def copy_all(pairs, jobs=8):
        if pairs and ".part-" in str(pairs[0][1]):
            seen.append(("here", conn.state("here"), conn.state("far")))
        return real_copy_all(pairs, jobs)

    monkeypatch.setattr(remote, "RUNNER", far_run)
    monkeypatch.setattr(trees, "copy_all", copy_all)
    with open_connection(f"test://{tmp_path}/node.xml") as conn:
        targets = []
        for name, place in (("here", Place(conn.uri, "h1")), ("far", Place(URI, "h2"))):
            tree = _tree(tmp_path, name)
            conn.define(_lxc(name, tree))
            conn.start(name)
            targets.append(Target(place, conn, conn.get(name)))
        storage = Storage(tmp_path / "st")
        taken, _frozen = ops.take(targets, "s1", storage)
        assert sorted(seen) == [("far", "paused", "paused"), ("here", "paused", "paused")]
        assert [conn.state(n) for n in ("here", "far")] == ["running", "running"]
        assert taken[1].where == f"{tmp_path}/st/snapshots/far/s1 on {URI}"
        far_tree = tmp_path / "given" / "far"
        assert (tmp_path / "st" / "snapshots" / "far" / "s1" / "data" / "etc" /
                "hostname").read_text() == "far\n"

        rows = ops.listing([t.refresh() for t in targets], storage)
        assert [(r["domain"], r["snapshot"], r["state"]) for r in rows] == [
            ("here", "s1", "running"), ("far", "s1", "running")]
        (far_tree / "etc" / "hostname").write_text("changed\n")
        conn.suspend("far")
        ops.restore([t.refresh() for t in targets], "s1", storage)
        assert (far_tree / "etc" / "hostname").read_text() == "far\n"
        assert conn.state("far") == "running"  # the state it was taken in
        assert not list(far_tree.parent.glob(".far.*"))
        with pytest.raises(NotFoundError):
            ops.restore([targets[1].refresh()], "nope", storage)
        ops.remove([t.refresh() for t in targets], "s1", storage)
        assert ops.listing(targets, storage) == []
