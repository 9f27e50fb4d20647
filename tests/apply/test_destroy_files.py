"""What destroy --delete-rootfs may delete: only directories virtmix made (by marker)."""

from __future__ import annotations

from virtmix.converge.destroy import delete_files
from virtmix.util import layout


def _guest_xml(disk: str) -> str:
    return (f"<domain type='qemu'><name>db</name><devices><disk type='file' device='disk'>"
            f"<source file='{disk}'/><target dev='vda'/></disk></devices></domain>")


def test_an_admins_own_guests_dir_is_left_alone(tmp_path):
    """A disk under some */guests/db/ that apply did not make (no marker) is not deleted,
    whatever its name looks like."""
    gdir = tmp_path / "userdisks" / "guests" / "db"
    gdir.mkdir(parents=True)
    (gdir / "disk-mine.qcow2").write_text("precious")
    assert delete_files("db", _guest_xml(str(gdir / "disk-mine.qcow2"))) == []
    assert (gdir / "disk-mine.qcow2").read_text() == "precious"


def test_a_guests_dir_apply_made_is_emptied_of_its_files(tmp_path):
    gdir = tmp_path / "storage" / "guests" / "db"
    gdir.mkdir(parents=True)
    (gdir / layout.GUEST_FILES_MARKER).touch()
    (gdir / "disk0.qcow2").write_text("x")
    (gdir / "serial.log").write_text("x")
    assert delete_files("db", _guest_xml(str(gdir / "disk0.qcow2"))) == [str(gdir)]
    assert not gdir.exists()


def test_a_built_trees_dir_is_found_from_the_root_filesystem():
    from virtmix.converge.destroy import _rootfs_dirs

    xml = """<domain type='lxc'><name>c</name><devices>
      <filesystem type='mount'><source dir='/srv/x/containers/c/rootfs'/><target dir='/'/>
      </filesystem><filesystem type='mount'><source dir='/data'/><target dir='/data'/>
      </filesystem></devices></domain>"""
    assert [str(p) for p in _rootfs_dirs(xml)] == ["/srv/x/containers/c"]
    given = xml.replace("/srv/x/containers/c/rootfs", "/srv/trees/c")
    assert _rootfs_dirs(given) == []  # a given tree is the admin's


def _container(tmp_path, conn, name):
    """A built tree (with virtmix's marker) and a container defined on it."""
    from virtmix.rootfs import Storage

    storage = Storage(tmp_path / "st")
    storage.ensure()
    tree = storage.make_container_dir(name) / "rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text(name)
    conn.define(f"<domain type='lxc'><name>{name}</name><memory>65536</memory><os>"
                "<type>exe</type><init>/sbin/init</init></os><devices>"
                f"<filesystem type='mount'><source dir='{tree}'/><target dir='/'/>"
                "</filesystem></devices></domain>")
    return storage, tree


def _snap(storage, tree, name, snap, uuid):
    from virtmix.snapshots import trees

    src = trees.TreeSource(storage, tree, tree, "tree")
    return trees.take(src, name, snap, {"state": "shutoff", "uuid": uuid})


def test_delete_rootfs_deletes_the_containers_snapshots(tmp_path, monkeypatch):
    """--delete-rootfs: the tree and the container's snapshots go (lxc-destroy -s, Incus);
    a same-named container's of another UUID, in the same storage, stays; --keep-snapshots
    keeps them and destroy says where they are."""
    from virtmix.backend import open_connection
    from virtmix.converge.destroy import destroy_target, domain_target

    monkeypatch.setenv("VIRTMIX_STORAGE", str(tmp_path / "st"))
    with open_connection("test:///default") as conn:
        for keep in (False, True):
            name = f"vmixt-dsn-{int(keep)}"
            storage, tree = _container(tmp_path, conn, name)
            uuid = conn.get(name).uuid
            s1 = _snap(storage, tree, name, "s1", uuid)
            s2 = _snap(storage, tree, name, "s2", uuid)
            other = _snap(storage, tree, name, "theirs", "another-uuid")
            t = domain_target(conn, name, name, None)
            destroy_target(conn, t, force_foreign=True, delete_rootfs=True,
                           keep_snapshots=keep)
            assert t.result.startswith("removed"), t.result
            assert not tree.exists()
            assert other.is_dir()
            if keep:
                assert s1.is_dir() and s2.is_dir()
                assert "snapshot" not in t.detail
                assert any("(2 snapshot(s) of it, kept" in k
                           for k in t.kept), t.kept
            else:
                assert not s1.exists() and not s2.exists()
                assert f"2 snapshot(s) (s1, s2) in {storage.root}/snapshots/{name}" \
                    in t.detail, t.detail
