"""The pushed-tree marker's manifest: a file left short by a crash changes its digest."""

from __future__ import annotations

import subprocess
from pathlib import Path

from virtmix.nesting.ops import MANIFEST_SH, local_manifest


def _tree(root: Path) -> Path:
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libkmod.so.2").write_bytes(b"\x7fELF" + b"x" * 1000)
    (root / "usr/sbin").mkdir()
    (root / "usr/sbin/init").write_bytes(b"#!/bin/sh\n")
    (root / "bin").symlink_to("usr/bin")  # merged /usr: not walked twice
    (root / "var/log").mkdir(parents=True)
    return root


def test_manifest_changes_when_a_library_is_short(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t")
    before = local_manifest(tree)
    assert len(before) == 64
    (tree / "var/log/syslog").write_text("a running container writes here")
    assert local_manifest(tree) == before  # only the package-managed part counts
    (tree / "usr/lib/libkmod.so.2").write_bytes(b"")  # "file too short" after a power cut
    assert local_manifest(tree) != before


def test_manifest_is_the_same_on_a_copy(tmp_path: Path) -> None:
    """What the guest computes over the unpacked tree equals the host's over the staged."""
    tree = _tree(tmp_path / "a")
    copy = tmp_path / "b"
    copy.mkdir()
    subprocess.run(f"tar -C {tree} -cpf - . | tar -C {copy} -xpf -", shell=True, check=True)
    assert local_manifest(copy) == local_manifest(tree)
    assert "sha256sum" in MANIFEST_SH
