"""A connection to libvirt's in-process test driver for CLI tests, cleaned up by name prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtmix.backend import open_connection
from virtmix.backend.protocol import Backend

URI = "test:///default"


def held_test_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                     prefix: str) -> Iterator[Backend]:
    """test:///default kept open for the test (its state lives as long as a connection),
    locks in tmp_path; domains named prefix* are removed afterwards."""
    monkeypatch.setenv("VIRTMIX_LOCK_DIR", str(tmp_path / "locks"))
    conn = open_connection(URI)
    yield conn
    for rec in conn.list_domains():
        if rec.name.startswith(prefix):
            if rec.active:
                conn.destroy(rec.name)
            conn.undefine(rec.name)
    conn.close()
