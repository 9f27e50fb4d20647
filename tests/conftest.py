"""Shared pytest fixtures: the real libvirtd, its connections, test trees, guest kernel, cleanup.

Live fixtures fail (never skip) when the daemon is missing: CI runs every test, and a broken
host must show up as red. Nothing here imports virtmix (tests of the package import it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis' default 200 ms deadline per example measures the machine, not the property:
# one CI run on a loaded host failed a profile-merging example on it. The properties stay.
settings.register_profile("virtmix", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("virtmix")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import support` in any import mode

from support import (  # noqa: E402
    GuestKernel,
    build_busybox_tree,
    cleanup_domains,
    fetch_guest_kernel,
)

LXC_URI = "lxc:///system"
QEMU_URI = "qemu:///system"
# Trees and kernels live on disk (not tmpfs /tmp): containers run from them.
ASSET_DIR = Path("/var/tmp")
SETUP_HINT = "run `sudo bash scripts/setup-host.sh` (or `make host`) to install and start it"


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the markers exist with any config file.
    config.addinivalue_line("markers", "live: needs the real libvirtd (part of the default run)")
    config.addinivalue_line("markers", "slow: builds trees or boots guests (default run)")
    config.addinivalue_line("markers", "exclusive: restarts libvirtd or runs a second one "
                            "in this network namespace: never beside other tests")


# `make test` runs the suite on pytest-xdist workers (`--dist loadscope`, with the
# scheduler below): each group runs on one worker, one test after another. A module is its
# own group, so its module-scoped fixtures (a booted guest) are made once. Modules that share
# more than their own names share a lane: the rootfs tests' session storage, whose cleanup
# removes every vmixt-rootfs-* container; the live apply tests, which clean the whole
# apply_helpers.PFX; the admin verb tests, which reuse admin_helpers' names; the nesting unit
# tests, whose site file names one storage dir that their fixture removes. Everything else
# (networks, bridges, subnets, storage dirs, name prefixes, site names) is unique per module.
LANES = {
    "tests/rootfs/": "rootfs",
    "tests/nesting/": "nesting-unit",
    "tests/live/test_apply": "live-apply",
    "tests/live/test_clean_stop.py": "live-apply",
    "tests/live/test_verified_start.py": "live-apply",
    "tests/live/test_admin_": "live-admin",
    "tests/live/test_attach_terminal.py": "live-admin",
}
# The longest groups go out first (seconds from a serial CI run), so the workers share them
# rather than one worker starting a 4-minute guest test when the other has nothing left.
LONGEST_FIRST = ("tests/live/test_nesting.py",      # 250 s: an LXC-host guest, nested trees
                 "tests/live/test_cloud_init.py",   # 230 s: builds a cloud image, boots it
                 "rootfs",                          # 165 s: builds bases, boots containers
                 "tests/live/test_move.py",         # 160 s: an LXC-host guest, moves
                 "tests/live/test_snapshots.py",    # 105 s
                 "live-apply", "live-admin",
                 "tests/live/test_seed_workflow.py", "tests/live/test_ansible_handoff.py",
                 "tests/faults/test_faults.py", "tests/live/test_machines.py")
TESTS_ROOT = Path(__file__).resolve().parent


def lane(nodeid: str) -> str:
    """The group of a test: its lane, else its module ("tests/live/test_x.py")."""
    path = nodeid.split("::", 1)[0]
    return next((name for start, name in LANES.items() if path.startswith(start)), path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/live/ talks to the daemon: mark it live. Under xdist, the
    longest groups first."""
    live_dir = TESTS_ROOT / "live"
    for item in items:
        if live_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.live)
    if getattr(config.option, "dist", "no") != "no":
        rank = {g: i for i, g in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda it: rank.get(lane(it.nodeid), len(rank)))  # stable


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # a plain `pytest` without xdist runs one test at a time
    LoadScopeScheduling = None
if LoadScopeScheduling is not None:
    class LaneScheduling(LoadScopeScheduling):  # type: ignore[misc, valid-type]
        """xdist's per-module scheduling, with LANES: one work unit per lane."""

        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    # xdist's own `loadgroup` marks do not group under pytest 9 (they rewrite a node id
    # attribute pytest 9 no longer reads), so the groups come from the node ids here.
    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
        if config.getvalue("dist") == "loadscope":
            return LaneScheduling(config, log)
        return None


@dataclass(frozen=True)
class Daemon:
    """The libvirtd the live tests use: its URIs and library/daemon versions."""

    lxc_uri: str
    qemu_uri: str
    version: int


def _open(uri: str):
    """libvirt.open(uri), or a test failure (not a skip) that says how to fix the host."""
    problem = None
    try:
        import libvirt
    except ImportError as exc:
        pytest.fail(f"libvirt-python is not importable ({exc}); run `make venv`", pytrace=False)
    # Without a handler libvirt-python prints every error to stderr, even handled ones.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        problem = str(exc)  # failed outside the except: no chained traceback noise
    pytest.fail(f"libvirtd does not answer on {uri}: {problem}\n{SETUP_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def libvirtd() -> Daemon:
    """Checks that libvirtd answers on lxc:///system and qemu:///system; fails otherwise."""
    versions = []
    for uri in (LXC_URI, QEMU_URI):
        conn = _open(uri)
        versions.append(conn.getLibVersion())
        conn.close()
    return Daemon(lxc_uri=LXC_URI, qemu_uri=QEMU_URI, version=versions[0])


@pytest.fixture(scope="session")
def lxc_conn(libvirtd: Daemon) -> Iterator[object]:
    """A libvirt-python connection to lxc:///system, shared by the session."""
    conn = _open(libvirtd.lxc_uri)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def qemu_conn(libvirtd: Daemon) -> Iterator[object]:
    """A libvirt-python connection to qemu:///system, shared by the session."""
    conn = _open(libvirtd.qemu_uri)
    yield conn
    conn.close()


def _asset_dir(prefix: str) -> Path:
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=ASSET_DIR))
    # mkdtemp makes it 0700; an <idmap> container's root (host uid 100000) must traverse it.
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def busybox_tree() -> Iterator[Path]:
    """A busybox root tree (root-owned) for privileged containers; shared, treat read-only."""
    base = _asset_dir("virtmix-test-busybox-")
    yield build_busybox_tree(base / "root")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_tree_idmap() -> Iterator[Path]:
    """A busybox tree owned by uid/gid 100000 for <idmap> target 100000 containers."""
    base = _asset_dir("virtmix-test-busybox-idmap-")
    yield build_busybox_tree(base / "root", shift=100000)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_busybox_tree() -> Iterator[Callable[..., Path]]:
    """Factory: make_busybox_tree(shift=None) -> a private tree, removed after the test."""
    made: list[Path] = []

    def make(shift: int | None = None) -> Path:
        base = _asset_dir("virtmix-test-busybox-")
        made.append(base)
        return build_busybox_tree(base / "root", shift=shift)

    yield make
    for base in made:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_kernel() -> Iterator[GuestKernel]:
    """Debian cloud kernel + busybox initrd (prints GuestKernel.MARKER on ttyS0)."""
    base = _asset_dir("virtmix-test-kernel-")
    yield fetch_guest_kernel(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def domain_cleanup() -> Iterator[Callable[[object, str], None]]:
    """Factory: domain_cleanup(conn, prefix) removes domains+networks named prefix* now
    (leftovers of a crashed run) and again at teardown, even when the test failed."""
    registered: list[tuple[object, str]] = []

    def register(conn: object, prefix: str) -> None:
        cleanup_domains(conn, prefix)
        registered.append((conn, prefix))

    yield register
    errors = []
    for conn, prefix in reversed(registered):
        try:
            cleanup_domains(conn, prefix)
        except Exception as exc:  # noqa: BLE001 - clean the others, then report
            errors.append(f"{prefix}: {exc}")
    if errors:
        pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true", default=False,
                     help="rewrite tests/golden/expected/*.xml from the current templates")
