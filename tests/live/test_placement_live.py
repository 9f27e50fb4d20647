"""Placement against the real libvirtd: a host `local` and a second host that cannot be
reached (a socket that does not exist: no traffic leaves the machine). Entries with
`host: auto` go to local, plan says why, apply records the placement, the next plan keeps it,
destroy of the inventory finds the placed domains."""

from __future__ import annotations

import json

import libvirt
import pytest
import yaml
from apply_helpers import (
    busybox,
    lxc_host,
    make_storage_dir,
    names_with_prefix,
    remove_storage_dir,
    virtmix,
)

from virtmix.domain import metadata
from virtmix.domain.xmlnode import parse

pytestmark = pytest.mark.live

PFX = "vmixt-place-"
FAR = "lxc:///system?socket=/run/virtmix-test-no-such-host.sock"


@pytest.fixture
def storage(lxc_conn, domain_cleanup):
    domain_cleanup(lxc_conn, PFX)
    path = make_storage_dir()
    yield path
    remove_storage_dir(path)


def test_auto_entries_go_to_the_reachable_host(lxc_conn, storage, busybox_tree):
    doc = {"name": "vmixt-place-site", "settings": {"storage_dir": str(storage)},
           "hosts": {"far": {"uri": FAR, "lxc_uri": FAR, "memory": "64GiB"},
                     "local": lxc_host({})},
           "containers": {PFX + "web1": busybox(busybox_tree, host="auto",
                                                anti_affinity="web"),
                          PFX + "web2": busybox(busybox_tree, hosts=["far", "local"],
                                                placement="pack")}}
    inv = storage / "site.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))

    res = virtmix("plan", str(inv), check=10)
    for name in ("web1", "web2"):
        assert f"+ container {PFX}{name} on local (lxc:///system) (placed: " in res.stdout
    assert "not far: unreachable" in res.stdout and "placed: spread, most free" in res.stdout
    data = json.loads(virtmix("plan", str(inv), "-o", "json", check=10).stdout)
    placements = {i["name"]: i["placement"] for i in data["items"]}
    assert placements[PFX + "web2"]["policy"] == "pack"
    assert placements[PFX + "web1"]["host"] == "local"

    virtmix("apply", str(inv), "--yes", check=0)
    assert names_with_prefix(lxc_conn, PFX) == [PFX + "web1", PFX + "web2"]
    xml = lxc_conn.lookupByName(PFX + "web2").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    meta = metadata.read(parse(xml))
    assert meta is not None and meta["placed"] == "pack" and meta["host"] == "local"

    # Placement is read back: nothing to do, nothing moves, even with the policy changed.
    doc["settings"]["placement"] = "pack"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = virtmix("plan", str(inv), check=0)
    assert "nothing to do (2 up to date)" in res.stdout

    # One more entry that no host can take: an error naming the constraint, nothing made.
    doc["containers"][PFX + "huge"] = busybox(busybox_tree, memory="100TiB")
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = virtmix("plan", str(inv), check=3)
    assert "no host satisfies memory 100TiB" in res.stderr + res.stdout
    del doc["containers"][PFX + "huge"]
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))

    virtmix("destroy", str(inv), "--yes", check=0)
    assert names_with_prefix(lxc_conn, PFX) == []
