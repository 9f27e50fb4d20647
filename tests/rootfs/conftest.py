"""Fixtures for the rootfs tests: one storage dir whose base-tree cache outlives the session.

The cache is keyed by spec, so a second run finds the bookworm base already built and the
suite stays cheap. Every container and domain is named vmixt-rootfs-* and removed by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lxchelp  # noqa: E402

from virtmix.errors import VirtmixError  # noqa: E402
from virtmix.rootfs import (
    ContainerSetup,
    ProvisionResult,
    RootfsSpec,
    Storage,
    provision_container,
    remove_container_tree,
)
from virtmix.rootfs.build import BaseTree, ensure_base, ensure_shifted  # noqa: E402
from virtmix.rootfs.idmap import IDMAP_OFFSET  # noqa: E402

TEST_ROOT = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs"))
PREFIX = lxchelp.PREFIX
BOOKWORM = RootfsSpec(suite="bookworm")  # the spec of the session's shared base


def _cleanup(storage: Storage) -> None:
    try:
        conn = lxchelp.connect()
    except Exception:  # noqa: BLE001 - no daemon: nothing defined to undefine
        conn = None
    for name in storage.container_names():
        if not name.startswith(PREFIX):
            continue
        if conn is not None:
            lxchelp.destroy_undefine(conn, name)
        with contextlib.suppress(VirtmixError):
            remove_container_tree(storage, name)
    if conn is not None:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                lxchelp.destroy_undefine(conn, dom.name())
        conn.close()
    # Snapshots of the tests' containers (a failed test leaves them; the next run's
    # snapshot of the same name would be refused).
    snapshots = storage.root / "snapshots"
    if snapshots.is_dir():
        for d in snapshots.iterdir():
            if d.name.startswith(PREFIX):
                shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    """The shared storage (cache kept between runs; containers removed)."""
    st = Storage(TEST_ROOT / "shared")
    st.ensure()
    _cleanup(st)  # leftovers of a crashed run
    yield st
    _cleanup(st)


@pytest.fixture(scope="session")
def bookworm_base(storage: Storage) -> tuple[BaseTree, float]:
    """The bookworm minbase entry (built once, ever) and how long ensuring it took."""
    t0 = time.monotonic()
    base = ensure_base(BOOKWORM, storage)
    return base, time.monotonic() - t0


@pytest.fixture(scope="session")
def bookworm_shifted(storage: Storage, bookworm_base: tuple[BaseTree, float]) -> BaseTree:
    return ensure_shifted(bookworm_base[0], storage, IDMAP_OFFSET)


@pytest.fixture
def scratch_storage() -> Iterator[Storage]:
    """A private storage dir for tests that must start from an empty cache."""
    path = TEST_ROOT / f"scratch-{os.getpid()}-{time.monotonic_ns()}"
    st = Storage(path)
    st.ensure()
    yield st
    _cleanup(st)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_container(storage: Storage) -> Iterator[Callable[..., ProvisionResult]]:
    """Factory: make_container(suffix, spec=BOOKWORM, **setup) -> ProvisionResult; the
    tree (and any domain of that name) is removed after the test, even on failure."""
    made: list[tuple[Storage, str]] = []

    def make(suffix: str, spec: RootfsSpec = BOOKWORM, *, privileged: bool = False,
             clone: str = "auto", where: Storage | None = None,
             **setup_kw: object) -> ProvisionResult:
        st = where or storage
        name = PREFIX + suffix
        made.append((st, name))
        setup = ContainerSetup(name=name, **setup_kw)  # type: ignore[arg-type]
        return provision_container(name, spec, setup, st, privileged=privileged, clone=clone)

    yield make
    conn = lxchelp.connect()
    try:
        for st, name in reversed(made):
            lxchelp.destroy_undefine(conn, name)
            with contextlib.suppress(VirtmixError):
                remove_container_tree(st, name)
    finally:
        conn.close()


@pytest.fixture
def lxc() -> Iterator[object]:
    conn = lxchelp.connect()
    yield conn
    conn.close()
