"""ls --tree: rows of `ls` drawn as host -> guests -> containers."""

from __future__ import annotations

from pathlib import Path

from virtmix.nesting.guests import render_tree, site_tree, tree_from_rows

HERE_SITE = Path(__file__).resolve().parent / "site_nested.yaml"


def row(name, kind, host="hv1", parent=None, state="running", cpuset=None, shares=None):
    return {"name": name, "kind": kind, "host": host, "parent": parent, "state": state,
            "cpuset": cpuset, "shares": shares}


def test_guest_children_and_host_containers():
    rows = [row("web", "lxc", shares=1024), row("g1", "kvm"),
            row("db", "lxc", parent="g1", cpuset="1", shares=50), row("c2", "lxc", parent="g1")]
    assert render_tree(tree_from_rows(rows)).splitlines() == [
        "hv1 [host]",
        "├── g1 [guest] running",
        "│   ├── db [container] running cpuset=1 shares=50",
        "│   └── c2 [container] running",
        "└── web [container] running shares=1024",
    ]


def test_nested_container_of_unlisted_guest_gets_a_placeholder():
    rows = [row("db", "lxc", parent="gone", state="shutoff")]
    assert render_tree(tree_from_rows(rows)).splitlines() == [
        "hv1 [host]",
        "└── gone [guest] (not listed)",
        "    └── db [container] shutoff",
    ]


def test_several_hosts_each_a_root():
    rows = [row("a", "lxc", host="h1"), row("b", "kvm", host="h2")]
    text = render_tree(tree_from_rows(rows))
    assert text.splitlines() == ["h1 [host]", "└── a [container] running",
                                 "h2 [host]", "└── b [guest] running"]


def test_site_tree_from_inventory(nested_site):
    (host,) = site_tree(nested_site, {("qemu:///system", "g1"): {"state": "running"}})
    guests = {n.name: n for n in host.children if n.kind == "guest"}
    assert [c.name for c in guests["g1"].children] == ["db", "web"]
    assert guests["g1"].state == "running" and guests["plain"].state == "?"
    assert guests["g1"].children[0].label() == "db [container] ? cpuset=1 shares=512"


def test_plan_tree_marks_containers_of_an_unreachable_guest_pending(nested_site):
    from types import SimpleNamespace

    from virtmix.nesting.guests import plan_tree

    nested = "lxc+ssh://root@10.213.99.10/system"
    items = [SimpleNamespace(target="domain", uri="qemu:///system", name="g1", parent=None,
                             status="create"),
             SimpleNamespace(target="domain", uri=nested, name="db", parent="g1",
                             status="waiting"),
             SimpleNamespace(target="network", uri="qemu:///system", name="lan", parent=None,
                             status="create")]
    lines = plan_tree(nested_site, items).splitlines()
    assert lines[:4] == ["hv1 [host]", "├── g1 [guest] create",
                         "│   ├── db [container] pending cpuset=1 shares=512",
                         "│   └── web [container] ?"]


def test_nested_cpuset_is_checked_against_the_guest_vcpus(tmp_path):
    import pytest

    from virtmix.errors import InventoryError
    from virtmix.inventory.load import load_site

    text = (HERE_SITE.read_text().replace('cpu: {cpuset: "1", shares: 512}',
                                          'cpu: {cpuset: "2", shares: 512}'))
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(InventoryError, match=r"CPU 2, which guest 'g1' \(2 vcpus\)"):
        load_site(tmp_path / "s.yaml")
