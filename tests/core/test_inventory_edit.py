"""inventory/edit.py: `move` rewrites the inventory text in place, keeping comments."""

from __future__ import annotations

import pytest
import yaml

from virtmix.inventory.edit import MoveEditError, move_entry

SITE = """\
name: s  # the site
hosts:
  hv:
    uri: qemu:///system
    containers:
      web:              # the web one
        profile: debian   # keep this comment
        memory: 1GiB
      db: {profile: debian}
    guests:
      g:
        vcpus: 2
        containers: {}
  hv2:
    uri: qemu+ssh://root@hv2/system
"""


def test_entry_moves_into_a_guest_and_back_with_its_comments():
    to_guest = move_entry(SITE, ("hosts", "hv", "containers", "web"),
                          ("hosts", "hv", "guests", "g", "containers"))
    doc = yaml.safe_load(to_guest)
    assert doc["hosts"]["hv"]["guests"]["g"]["containers"] == {
        "web": {"profile": "debian", "memory": "1GiB"}}
    assert list(doc["hosts"]["hv"]["containers"]) == ["db"]
    assert "# keep this comment" in to_guest and "# the web one" in to_guest
    back = move_entry(to_guest, ("hosts", "hv", "guests", "g", "containers", "web"),
                      ("hosts", "hv", "containers"))
    assert yaml.safe_load(back) == yaml.safe_load(SITE)
    assert yaml.safe_load(back)["hosts"]["hv"]["guests"]["g"]["containers"] == {}


def test_a_missing_containers_section_is_made_and_an_emptied_one_is_an_empty_map():
    one = move_entry(SITE, ("hosts", "hv", "containers", "db"), ("hosts", "hv2", "containers"))
    two = move_entry(one, ("hosts", "hv", "containers", "web"), ("hosts", "hv2", "containers"))
    doc = yaml.safe_load(two)
    assert doc["hosts"]["hv"]["containers"] == {}
    assert doc["hosts"]["hv2"]["containers"] == {"db": {"profile": "debian"},
                                                 "web": {"profile": "debian",
                                                         "memory": "1GiB"}}
    assert doc["hosts"]["hv2"]["uri"] == "qemu+ssh://root@hv2/system"


def test_what_cannot_be_edited_safely_is_refused():
    with pytest.raises(MoveEditError, match="anchors"):
        move_entry(SITE + "x: &a {b: 1}\ny: *a\n", ("hosts", "hv", "containers", "db"),
                   ("hosts", "hv2", "containers"))
    flow = SITE.replace("containers: {}", "containers: {other: {}}")
    with pytest.raises(MoveEditError, match="flow mapping"):
        move_entry(flow, ("hosts", "hv", "containers", "db"),
                   ("hosts", "hv", "guests", "g", "containers"))
    with pytest.raises(MoveEditError, match="not found"):
        move_entry(SITE, ("hosts", "hv", "containers", "nope"), ("hosts", "hv2", "containers"))
