"""destroy asks first (SIGPWR halts busybox init) and says so; --force forces at once."""

from __future__ import annotations

import pytest
from apply_helpers import (
    PFX,
    busybox,
    lxc_host,
    make_storage_dir,
    remove_storage_dir,
    virtmix,
    write_inventory,
)

pytestmark = pytest.mark.live


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_destroy_shuts_down_cleanly_then_force_forces(lxc_conn, storage, busybox_tree):
    a, b = PFX + "clean", PFX + "forced"
    inv = str(write_inventory(storage, {"h1": lxc_host({a: busybox(busybox_tree)})}))
    virtmix("apply", inv, "--yes", check=0)
    res = virtmix("destroy", inv, "--yes", "--timeout", "20", check=0)
    assert f"{a}: removed (shut down)" in res.stdout
    assert "kept:" in res.stdout

    inv = str(write_inventory(storage, {"h1": lxc_host({b: busybox(busybox_tree)})}))
    virtmix("apply", inv, "--yes", check=0)
    res = virtmix("destroy", inv, "--yes", "--force", check=0)
    assert f"{b}: removed (forced off)" in res.stdout
