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
