"""A cached guest image is reused only whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtmix.errors import RootfsError
from virtmix.images.build import META, CachedImage, _checked


def _entry(tmp_path: Path) -> CachedImage:
    d = tmp_path / "debian-bookworm-amd64-0123"
    d.mkdir()
    for f in ("base.qcow2", "vmlinuz", "initrd.img"):
        (d / f).write_bytes(b"x" * 10)
    (d / META).write_text(json.dumps({"seconds": 1}))
    return CachedImage(d.name, d, True, 0.0)


def test_a_whole_entry_is_reused(tmp_path: Path) -> None:
    image = _entry(tmp_path)
    assert _checked(image) is image


@pytest.mark.parametrize("broken", ["initrd.img", "base.qcow2", META])
def test_an_empty_or_missing_part_is_an_error_naming_the_entry(tmp_path: Path, broken) -> None:
    image = _entry(tmp_path)
    (image.path / broken).write_bytes(b"")  # left empty by a power cut before a sync
    with pytest.raises(RootfsError, match="is incomplete") as err:
        _checked(image)
    assert str(image.path) in err.value.message and image.key in (err.value.hint or "")
