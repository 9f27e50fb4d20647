"""The mount table lookups of rootfs.storage: exact, escaped paths, and only matching lines
parsed (thousands of container overlays must not make each lookup parse them all)."""

from __future__ import annotations

from pathlib import Path

from virtmix.rootfs import storage

TABLE = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /st/containers/a/rootfs rw - overlay overlay rw,upperdir=/st/containers/a/upper
91 22 0:51 / /st/containers/ab/rootfs rw - overlay overlay rw,upperdir=/st/containers/ab/upper
92 22 0:52 / /st/odd\\040name/rootfs rw - overlay overlay rw
93 90 0:53 / /st/containers/a/rootfs/proc rw - proc proc rw
"""


def test_lookups_are_exact_and_read_escaped_paths(monkeypatch):
    monkeypatch.setattr(storage, "_mountinfo", lambda: TABLE)
    assert storage.is_mount_point(Path("/st/containers/a/rootfs"))
    assert not storage.is_mount_point(Path("/st/containers/a"))  # a prefix is no mount
    assert not storage.is_mount_point(Path("/st/containers/b/rootfs"))
    assert storage.is_mount_point(Path("/st/odd name/rootfs"))
    assert storage.mounts_below(Path("/st/containers/a")) == [
        "/st/containers/a/rootfs", "/st/containers/a/rootfs/proc"]
    assert storage.mounts_below(Path("/st/containers/c")) == []
    assert [m for m, _, _ in storage.mount_points()] == [
        "/", "/st/containers/a/rootfs", "/st/containers/ab/rootfs", "/st/odd name/rootfs",
        "/st/containers/a/rootfs/proc"]
    assert storage.mount_points("/st/containers/ab") == [
        ("/st/containers/ab/rootfs", "overlay", "rw,upperdir=/st/containers/ab/upper")]


def test_a_lookup_parses_only_the_lines_that_name_the_path(monkeypatch):
    many = "".join(f"{100 + i} 22 0:{i} / /st/containers/c{i}/rootfs rw - overlay overlay rw\n"
                   for i in range(5000))
    monkeypatch.setattr(storage, "_mountinfo", lambda: TABLE + many)
    parsed = []
    real = storage._parse
    monkeypatch.setattr(storage, "_parse", lambda lines: parsed.append(len(lines))
                        or real(lines))
    assert storage.is_mount_point(Path("/st/containers/c4999/rootfs"))
    assert not storage.is_mount_point(Path("/st/containers/zz/rootfs"))
    assert parsed == [1]  # one matching line parsed; none at all for the absent path
