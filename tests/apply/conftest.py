"""Fixtures for plan/apply unit tests: a per-test test-driver node and inventory files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from virtmix.backend import open_connection


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    """A private test:/// connection URI: every open starts from this empty node."""
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    return f"test://{node}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A stand-in root tree: plan/apply only check that init exists in it."""
    root = tmp_path / "tree"
    (root / "sbin").mkdir(parents=True)
    (root / "sbin" / "init").write_text("#!/bin/sh\n")
    return root


@pytest.fixture
def write_inventory(tmp_path: Path, node_uri: str, tree: Path) -> Callable[..., Path]:
    """write_inventory(containers={...}, guests={...}, networks={...}) -> inventory path."""

    def write(containers: dict | None = None, guests: dict | None = None,
              networks: dict | None = None, name: str = "unit") -> Path:
        cs = {}
        for cname, spec in (containers or {}).items():
            cs[cname] = {"rootfs": {"path": str(tree)}, "memory": "64MiB", **spec}
        doc = {"name": name, "settings": {"storage_dir": str(tmp_path / "storage")},
               "networks": networks or {},
               "hosts": {"h1": {"uri": node_uri, "lxc_uri": node_uri, "virt_type": "qemu",
                                "containers": cs, "guests": guests or {}}}}
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


@pytest.fixture
def conn(node_uri: str):
    c = open_connection(node_uri)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test driver's domains never die: a short settle window keeps these tests fast
    (the watch still runs; tests/apply/test_verify.py and the live tests use real ones)."""
    monkeypatch.setenv("VIRTMIX_SETTLE_SECONDS", "0.05")
