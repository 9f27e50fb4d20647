"""An entry that changed hosts is planned as a move (never destroy + create) and apply moves
it: two hosts, each its own test-driver node, both connections held for the whole test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtmix.backend import open_connection
from virtmix.cli.apply_output import item_to_dict, print_plan
from virtmix.converge.apply import Context, observe_and_plan, run_plan
from virtmix.converge.desired import desired_documents
from virtmix.converge.observe import observe_connection
from virtmix.converge.plan import Options, build_plan, guest_move, move_mode
from virtmix.inventory.load import load_site

PFX = "vmixt-mv-"


@pytest.fixture
def nodes(tmp_path: Path):
    """Two private test:/// hosts; their connections stay open (the node's state lives as
    long as its connection)."""
    uris = []
    for n in ("n1", "n2"):
        (tmp_path / f"{n}.xml").write_text("<node/>\n")
        uris.append(f"test://{tmp_path}/{n}.xml")
    conns = [open_connection(u) for u in uris]
    yield conns
    for c in conns:
        c.close()


def write(tmp_path: Path, nodes, tree: Path, where: str, kind: str = "containers") -> Path:
    spec = ({"rootfs": {"path": str(tree)}, "memory": "64MiB",
             "interfaces": [{"bridge": "vmixtmv0", "ipv4": "10.213.84.20/24"}]}
            if kind == "containers" else {"memory": "128MiB", "disks": []})
    hosts = {h: {"uri": c.uri, "lxc_uri": c.uri, "virt_type": "qemu", kind: {}}
             for h, c in zip(("h1", "h2"), nodes, strict=True)}
    hosts[where][kind] = {PFX + "c": spec}
    doc = {"name": "mvunit", "settings": {"storage_dir": str(tmp_path / "storage")},
           "hosts": hosts}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def plan_and_apply(path: Path, nodes, apply: bool = True):
    site = load_site(path)
    domains, networks = desired_documents(site)
    read = ({c.uri: c for c in nodes}, {c.uri: observe_connection(c) for c in nodes})
    plan, conns = observe_and_plan(site, domains, networks, Options(), read=read)
    result = run_plan(Context(site, conns, jobs=2), plan) if apply else None
    return plan, result


def test_container_that_changed_hosts_is_moved_keeping_uuid_and_mac(tmp_path, nodes, tree,
                                                                     capsys):
    n1, n2 = nodes
    name = PFX + "c"
    _plan, result = plan_and_apply(write(tmp_path, nodes, tree, "h1"), nodes)
    assert not result.failed
    before = n1.get(name)
    assert before.active

    inv = write(tmp_path, nodes, tree, "h2")
    plan, _ = plan_and_apply(inv, nodes, apply=False)
    item = next(i for i in plan.items if i.name == name)
    assert (item.status, item.ops, item.host) == ("move", ["move"], "h2")
    assert item.reason == f"from h1 ({n1.uri})"
    assert item_to_dict(item)["move"] == {"from_uri": n1.uri, "from_host": "h1",
                                          "mode": "tree"}
    assert not [i for i in plan.items if i.status in ("orphan", "create", "remove")]
    from rich.console import Console

    print_plan(Console(width=200), plan)
    text = capsys.readouterr().out
    assert f"> container {name} on h2 ({n2.uri}): move" in text
    assert "1 to move" in text

    plan, result = plan_and_apply(inv, nodes)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    assert "moved from" in result.changed[0].message
    after = n2.get(name)
    assert after.active and after.uuid == before.uuid
    mac = before.tree.find("devices/interface/mac").get("address")
    assert after.tree.find("devices/interface/mac").get("address") == mac
    assert name not in {r.name for r in n1.list_domains()}  # on exactly one host
    again, _ = plan_and_apply(inv, nodes, apply=False)
    assert not again.pending, [(i.name, i.status, i.ops) for i in again.pending]


def test_guest_move_is_planned_cold_on_test_driver_and_live_between_qemu_daemons(
        tmp_path, nodes, tree):
    name = PFX + "c"
    _plan, result = plan_and_apply(write(tmp_path, nodes, tree, "h1", "guests"), nodes)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    site = load_site(write(tmp_path, nodes, tree, "h2", "guests"))
    domains, networks = desired_documents(site)
    observed = {c.uri: observe_connection(c) for c in nodes}
    plan = build_plan(site.name, domains, networks, observed, Options(), {"h1", "h2"})
    item = next(i for i in plan.items if i.name == name)
    assert (item.status, item.move_mode) == ("move", "cold")
    assert item.reason.endswith(", cold migration (libvirt migrates only between two QEMU "
                                "daemons)"), item.reason
    n1, n2 = nodes
    uuid = n1.get(name).uuid
    _plan, result = plan_and_apply(write(tmp_path, nodes, tree, "h2", "guests"), nodes)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    assert n2.state(name) == "running" and n2.get(name).uuid == uuid  # cold: stop, define
    assert name not in {r.name for r in n1.list_domains()}
    assert move_mode("guest", "running", "qemu:///system",
                     "qemu+ssh://root@10.0.0.2/system") == "live"
    assert move_mode("guest", "shutoff", "qemu:///system", "qemu+ssh://h/system") == "cold"
    assert move_mode("container", "running", "lxc:///system", "lxc+ssh://h/system") == "tree"
    # Why not live, as the plan says it: a stopped guest, a change of virt type.
    assert guest_move("shutoff", "qemu:///system", "qemu+ssh://h/system") == (
        "cold", "it is not running (shutoff)")
    assert guest_move("running", "qemu:///system", "qemu+ssh://h/system", "kvm", "qemu") == (
        "cold", "virt_type kvm where it runs, qemu on the target: a running guest cannot "
        "change it")
    assert guest_move("running", "qemu:///system", "qemu+ssh://h/system", "qemu", "qemu") == (
        "live", "")


def test_failed_start_on_target_leaves_it_running_on_the_source(tmp_path, nodes, tree):
    """The target refuses the definition: the source is thawed, nothing is left there."""
    from virtmix.converge.move import move_container
    from virtmix.errors import VirtmixError

    n1, n2 = nodes
    name = PFX + "c"
    plan_and_apply(write(tmp_path, nodes, tree, "h1"), nodes)
    bad = n1.get(name).xml.replace("<memory unit='KiB'>", "<memory unit='bogus'>")
    with pytest.raises(VirtmixError):
        move_container(n1, n2, name, bad)
    assert n1.state(name) == "running"
    assert name not in {r.name for r in n2.list_domains()}


def test_a_move_interrupted_after_the_target_started_is_finished_by_the_next(tmp_path, nodes,
                                                                             tree):
    """Killed between "running there" and "removed here": the source is frozen, the target
    runs with its UUID. `move` again removes the source, and nothing else."""
    from virtmix.converge.move import move_container

    n1, n2 = nodes
    name = PFX + "c"
    plan_and_apply(write(tmp_path, nodes, tree, "h1"), nodes)
    rec = n1.get(name)
    n1.suspend(name)
    n2.define(rec.xml)
    n2.start(name)
    moved = move_container(n1, n2, name, rec.xml)
    assert "finished an interrupted move" in moved.notes[0]
    assert name not in {r.name for r in n1.list_domains()}
    assert n2.state(name) == "running" and n2.get(name).uuid == rec.uuid


def test_another_domain_of_that_name_on_the_target_is_never_replaced(tmp_path, nodes, tree):
    from virtmix.converge.move import move_container
    from virtmix.errors import ConflictError

    n1, n2 = nodes
    name = PFX + "c"
    plan_and_apply(write(tmp_path, nodes, tree, "h1"), nodes)
    rec = n1.get(name)
    n2.define(rec.xml.replace(rec.uuid, "00000000-0000-4000-8000-000000000001"))
    with pytest.raises(ConflictError, match="another UUID"):
        move_container(n1, n2, name, rec.xml)
    assert n1.state(name) == "running"
    assert n2.get(name).uuid == "00000000-0000-4000-8000-000000000001"


def test_a_network_inside_a_guest_waits_for_it_then_is_made(tmp_path, nodes, tree):
    """A guest-hosted network (the bridge a container moved into the guest needs) is planned
    `waiting` while the guest is down, then re-planned and made once it runs."""
    import subprocess

    n1, _n2 = nodes
    inner = tmp_path / "inner.xml"
    inner.write_text("<node/>\n")
    (tmp_path / "vmlinuz").write_text("k")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    guest = PFX + "g"
    doc = {"name": "mvunit", "settings": {"storage_dir": str(tmp_path / "storage")},
           "networks": {PFX + "gnet": {"host": guest, "mode": "isolated",
                                       "bridge": "vmixtmv0", "ipv4": "10.213.84.1/24"}},
           "hosts": {"h1": {"uri": n1.uri, "lxc_uri": n1.uri, "virt_type": "qemu",
                            "guests": {guest: {
                                "memory": "256MiB", "boot": {"kernel": str(tmp_path / "vmlinuz")},
                                "lxc_uri": f"test://{inner}", "image": {"path": str(base)},
                                "containers": {PFX + "k": {"rootfs": {"path": str(tree)},
                                                           "memory": "64MiB"}}}}}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    site = load_site(path)
    domains, networks = desired_documents(site)
    plan, conns = observe_and_plan(site, domains, networks, Options(),
                                   read=({n1.uri: n1}, {n1.uri: observe_connection(n1)}))
    net = next(i for i in plan.items if i.name == PFX + "gnet")
    assert net.status == "waiting"
    result = run_plan(Context(site, conns), plan)
    assert not result.failed, [(o.item.name, o.message) for o in result.failed]
    inner_conn = conns[f"test://{inner}"]
    assert [n.name for n in inner_conn.list_networks()] == [PFX + "gnet"]


def _idmapped(name: str, tree: Path, uid: int) -> str:
    return (f"<domain type='lxc'><name>{name}</name><memory>65536</memory><os><type>exe"
            "</type><init>/sbin/init</init></os>"
            f"<idmap><uid start='0' target='{uid}' count='65536'/>"
            f"<gid start='0' target='{uid}' count='65536'/></idmap><devices>"
            f"<filesystem type='mount'><source dir='{tree}'/><target dir='/'/></filesystem>"
            "</devices></domain>")


def test_an_idmapped_container_moves_to_a_host_with_another_range(tmp_path, nodes):
    """The source's tree (range 100000) is copied to the target's path and shifted to the
    target's range (1376256); a target that then refuses to start it gets nothing: the
    shifted copy is dropped and the source runs on, its tree untouched."""
    import os

    from virtmix.converge.move import TreeHooks, move_container
    from virtmix.errors import VirtmixError

    n1, n2 = nodes
    name = PFX + "u"
    src = tmp_path / "h1" / "rootfs"
    (src / "sbin").mkdir(parents=True)
    (src / "sbin" / "init").write_text("#!/bin/sh\n")
    (src / "home").mkdir()
    for p, uid in ((src, 100000), (src / "sbin", 100000), (src / "sbin" / "init", 100000),
                   (src / "home", 101000)):
        os.lchown(p, uid, uid)
    n1.define(_idmapped(name, src, 100000))
    n1.start(name)
    dst = tmp_path / "h2" / "rootfs"
    dropped: list[str] = []

    def drop(path: str) -> None:
        dropped.append(path)
        import shutil

        shutil.rmtree(path)

    hooks = TreeHooks(prepare=lambda p: Path(p).mkdir(parents=True), drop_target=drop)
    bad = _idmapped(name, dst, 1376256).replace("<memory>", "<memory unit='bogus'>")
    with pytest.raises(VirtmixError):
        move_container(n1, n2, name, bad, hooks)
    assert dropped == [str(dst)] and not dst.exists()
    assert n1.state(name) == "running" and os.lstat(src / "home").st_uid == 101000

    moved = move_container(n1, n2, name, _idmapped(name, dst, 1376256), hooks)
    assert n2.state(name) == "running" and name not in {r.name for r in n1.list_domains()}
    assert [os.lstat(dst / p).st_uid for p in ("", "sbin", "sbin/init", "home")] == [
        1376256, 1376256, 1376256, 1377256]
    assert os.lstat(dst / "home").st_gid == 1377256
    assert any("shifted from ids 100000.. to 1376256.." in n for n in moved.notes)
    assert os.lstat(src / "home").st_uid == 101000  # the source's (given) tree: as it was


def test_a_move_killed_after_the_shift_is_redone_by_the_next(tmp_path, nodes, monkeypatch):
    """Killed right after the copy was shifted (no rollback runs: a crash): the source is
    frozen, the target's tree shifted but not defined. After `resume`, `move` again copies
    (rsync puts the source's owners back), shifts once more and finishes: every id lands in
    the target range exactly once."""
    import os

    from virtmix.converge import move as move_mod

    n1, n2 = nodes
    name = PFX + "k"
    src = tmp_path / "h1" / "rootfs"
    (src / "sbin").mkdir(parents=True)
    (src / "sbin" / "init").write_text("#!/bin/sh\n")
    os.lchown(src / "sbin" / "init", 100033, 100033)
    n1.define(_idmapped(name, src, 100000))
    n1.start(name)
    dst = tmp_path / "h2" / "rootfs"
    hooks = move_mod.TreeHooks(prepare=lambda p: Path(p).mkdir(parents=True, exist_ok=True))

    class Killed(BaseException):
        pass

    def crash(point: str) -> None:
        if point == "move-shifted":
            raise Killed(point)

    with monkeypatch.context() as m:
        m.setattr(move_mod, "fault_point", crash)
        m.setattr(move_mod, "_rollback", lambda *a, **k: None)  # a kill runs no rollback
        with pytest.raises(Killed):
            move_mod.move_container(n1, n2, name, _idmapped(name, dst, 1376256), hooks)
    assert n1.state(name) == "paused" and os.lstat(dst / "sbin" / "init").st_uid == 1376289
    n1.resume(name)  # what the docs tell the admin
    move_mod.move_container(n1, n2, name, _idmapped(name, dst, 1376256), hooks)
    assert n2.state(name) == "running"
    assert os.lstat(dst / "sbin" / "init").st_uid == 1376289  # 1376256 + 33, not shifted twice
    assert os.lstat(dst).st_uid == 0  # outside the source's range: left as it was


def _running_with_ids(node, name: str, tmp_path: Path) -> tuple[Path, Path]:
    """`name` running on node with the shared range and an _ids_tree; (its tree, the tree
    a move to the second node makes)."""
    src, dst = tmp_path / "h1" / "rootfs", tmp_path / "h2" / "rootfs"
    _ids_tree(src)
    node.define(_idmapped(name, src, 100000))
    node.start(name)
    return src, dst


def _ids_tree(src: Path) -> None:
    """A source tree with ids in the floor (0, 33), past it (5000), and a v3 capability."""
    import os
    import struct

    (src / "sbin").mkdir(parents=True)
    (src / "sbin" / "init").write_text("#!/bin/sh\n")
    (src / "home").mkdir()
    (src / "home" / "far").write_text("x")
    (src / "ping").write_text("#!/bin/sh\n")
    for p, uid in ((src, 100000), (src / "sbin", 100000), (src / "sbin" / "init", 100033),
                   (src / "home", 105000), (src / "home" / "far", 105000),
                   (src / "ping", 100000)):
        os.lchown(p, uid, uid)
    os.chmod(src / "ping", 0o755)
    os.setxattr(src / "ping", "security.capability",
                struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, 100000))


def _assert_moved_ids(src: Path, dst: Path) -> None:
    import os
    import struct

    for d, dirs, files in os.walk(src):
        for n in ["", *dirs, *files]:
            a = Path(d) / n
            b = dst / a.relative_to(src)
            want = [i + 1376256 - 100000 for i in (os.lstat(a).st_uid, os.lstat(a).st_gid)]
            assert [os.lstat(b).st_uid, os.lstat(b).st_gid] == want, b
    cap = os.getxattr(dst / "ping", "security.capability")
    assert struct.unpack_from("<I", cap, 20)[0] == 1376256  # the v3 capability's root


@pytest.mark.parametrize("point", ["move-copied-live", "move-shifted-live", "move-frozen",
                                   "move-shifted", None])
def test_an_id_shifting_move_killed_at_any_step_is_finished_by_the_next(tmp_path, nodes,
                                                                         monkeypatch, point):
    """The copy is shifted while the container runs, the frozen pass maps owners and lists
    what it changed, and only that is shifted in the downtime. A user added between the
    passes (an id no map named) ends up shifted too; a kill (no rollback) at any step of it,
    then `resume` if it was left frozen and `move` again, ends with every id moved once."""
    import os

    from virtmix.converge import move as move_mod

    n1, n2 = nodes
    name = PFX + "s"
    src, dst = _running_with_ids(n1, name, tmp_path)
    hooks = move_mod.TreeHooks(prepare=lambda p: Path(p).mkdir(parents=True, exist_ok=True))
    xml = _idmapped(name, dst, 1376256)

    class Killed(BaseException):
        pass

    def at(p: str) -> None:
        if p == "move-shifted-live" and not (src / "home" / "new").exists():
            (src / "home" / "new").write_text("useradd, between the passes")
            os.lchown(src / "home" / "new", 107000, 107000)
        if p == point:
            raise Killed(p)

    monkeypatch.setattr(move_mod, "fault_point", at)
    if point:
        with monkeypatch.context() as m:
            m.setattr(move_mod, "_rollback", lambda *a, **k: None)  # a kill runs no rollback
            with pytest.raises(Killed):
                move_mod.move_container(n1, n2, name, xml, hooks)
        if n1.state(name) == "paused":
            n1.resume(name)  # what the docs tell the admin
        point = None
    moved = move_mod.move_container(n1, n2, name, xml, hooks)
    assert n2.state(name) == "running" and name not in {r.name for r in n1.list_domains()}
    _assert_moved_ids(src, dst)
    assert os.lstat(dst / "home" / "new").st_uid == 1383256
    note = next(n for n in moved.notes if n.startswith("its tree was shifted from ids"))
    assert "while it ran" in note and "in the downtime" in note
    assert 0 < moved.shift_frozen < moved.shift


@pytest.mark.parametrize("point", ["move-marked", "move-defined", "move-committed"])
def test_a_same_daemon_move_killed_around_its_redefinition_is_finished_by_the_next(
        tmp_path, nodes, monkeypatch, point):
    """Two URIs of one libvirtd (here one test:/// connection as both ends): the domain is
    redefined in place on its new tree. Killed after its old definition was marked, after
    the redefinition (shut off, on its new tree) or before the mark went, `move` again
    finishes it: running on the new tree, the old tree dropped, no mark left; it never says
    "there is nothing to move"."""
    from virtmix.converge import move as move_mod
    from virtmix.errors import UsageError

    n1, _n2 = nodes
    name = PFX + "one"
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "sbin").mkdir(parents=True)
    (old / "sbin" / "init").write_text("#!/bin/sh\n")
    n1.define(_idmapped(name, old, 100000))
    n1.start(name)
    dropped: list[str] = []
    hooks = move_mod.TreeHooks(prepare=lambda p: Path(p).mkdir(parents=True, exist_ok=True),
                               drop_source=dropped.append)
    xml = _idmapped(name, new, 100000)

    class Killed(BaseException):
        pass

    def crash(p: str) -> None:
        if p == point:
            raise Killed(p)

    with monkeypatch.context() as m:
        m.setattr(move_mod, "fault_point", crash)
        m.setattr(move_mod, "_rollback_one", lambda *a, **k: None)  # a kill: no rollback
        with pytest.raises(Killed):
            move_mod.move_container(n1, n1, name, xml, hooks)
    rec = n1.get(name)
    assert move_mod.pending_move(rec.xml) == {"was": "running", "from": str(old)}
    if point == "move-defined":
        assert rec.state == "shutoff" and move_mod.tree_of(rec.xml) == str(new)
    if rec.state == "paused":
        n1.resume(name)  # what the docs tell the admin
    moved = move_mod.move_container(n1, n1, name, xml, hooks)
    rec = n1.get(name)
    assert rec.state == "running" and moved.state == "running"
    assert move_mod.tree_of(rec.xml) == str(new) and move_mod.pending_move(rec.xml) is None
    assert dropped[-1] == str(old)
    if point == "move-defined":
        assert "started it on its new tree" in moved.notes[0]
    with pytest.raises(UsageError, match="nothing to move"):  # done: now there is none
        move_mod.move_container(n1, n1, name, xml, hooks)


def test_a_marked_definition_round_trips_and_unmarks_cleanly():
    from virtmix.converge.move import pending_move, with_mark

    xml = _idmapped("c", Path("/t"), 100000)
    marked = with_mark(xml, {"was": "running", "from": "/old"})
    assert pending_move(marked) == {"was": "running", "from": "/old"}
    assert pending_move(with_mark(marked, {"was": "shutoff", "from": "/o"})) == {
        "was": "shutoff", "from": "/o"}  # one mark, replaced
    assert pending_move(with_mark(marked, None)) is None
    assert "<metadata" not in with_mark(marked, None)  # an emptied <metadata> goes too


def test_a_live_shift_that_fails_drops_the_copy_and_the_source_runs_on(tmp_path, nodes,
                                                                        monkeypatch):
    """The shift now runs before the freeze (outside the old rollback): its failure (here
    the far python3's, as a BackendError) must still leave nothing on the target, and the
    source running, never frozen; a move again then starts from scratch."""
    from virtmix.converge import move as move_mod
    from virtmix.errors import BackendError

    n1, n2 = nodes
    name = PFX + "f"
    src, dst = _running_with_ids(n1, name, tmp_path)
    dropped: list[str] = []

    def drop(path: str) -> None:
        import shutil

        dropped.append(path)
        shutil.rmtree(path)

    hooks = move_mod.TreeHooks(prepare=lambda p: Path(p).mkdir(parents=True), drop_target=drop)

    def broken(*a, **k):
        raise BackendError("python3 there: ModuleNotFoundError: No module named 'json'")

    with monkeypatch.context() as m:
        m.setattr(move_mod, "shift_tree_at", broken)
        with pytest.raises(BackendError, match="json"):
            move_mod.move_container(n1, n2, name, _idmapped(name, dst, 1376256), hooks)
    assert dropped == [str(dst)] and not dst.exists()
    assert n1.state(name) == "running" and name not in {r.name for r in n2.list_domains()}
    move_mod.move_container(n1, n2, name, _idmapped(name, dst, 1376256), hooks)
    _assert_moved_ids(src, dst)
