"""destroy NAME... on the real daemon: several running containers named at once are found
with one listing per connection (both local drivers, no -c) and destroyed in parallel; an
unknown name among them stops the command before anything is destroyed."""

from __future__ import annotations

import pytest
from apply_helpers import busybox, lxc_host, make_storage_dir, remove_storage_dir, virtmix
from apply_helpers import write_inventory as write_site

pytestmark = pytest.mark.live

PFX = "vmixt-dnames-"
NAMES = [f"{PFX}{i}" for i in range(4)]


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)  # now and at teardown, even when the test failed
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def _running(lxc_conn) -> set[str]:
    return {d.name() for d in lxc_conn.listAllDomains() if d.name().startswith(PFX)
            and d.isActive()}


def test_several_names_destroyed_at_once(lxc_conn, storage, busybox_tree):
    inv = str(write_site(storage, {"hv1": lxc_host({n: busybox(busybox_tree)
                                                    for n in NAMES})}, name=PFX + "site"))
    virtmix("apply", inv, "--yes", "-j", "4", check=0)
    assert _running(lxc_conn) == set(NAMES)

    res = virtmix("destroy", *NAMES[:3], PFX + "nope", "--yes", "--force", check=6)
    assert f"no domain named '{PFX}nope'" in res.stderr + res.stdout
    assert _running(lxc_conn) == set(NAMES)  # nothing destroyed

    res = virtmix("destroy", *NAMES[:3], "--yes", "--force", "-j", "3", check=0)
    for n in NAMES[:3]:
        assert f"{n}: removed (forced off)" in res.stdout, res.stdout
    assert {d.name() for d in lxc_conn.listAllDomains() if d.name().startswith(PFX)} \
        == {NAMES[3]}
    assert _running(lxc_conn) == {NAMES[3]}
    virtmix("destroy", inv, "--yes", "--force", check=0)
    assert not [d for d in lxc_conn.listAllDomains() if d.name().startswith(PFX)]
