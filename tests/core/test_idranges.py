"""Each unprivileged built container gets its own host id range (issue 9: root in one
container owns nothing in another's tree); `idmap:` sets one explicitly."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.inventory.load import load_site
from virtmix.render.templates import render_domain
from virtmix.util.idranges import (
    BASE,
    COUNT,
    MAX_ID,
    SLOTS,
    Allocator,
    home_slot,
    isolated,
    overlaps,
    pick_for,
    recorded_ranges,
    slot_range,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated_ranges(monkeypatch):
    """These tests are about the allocator: ranges isolated whatever this machine's cgroups
    are (the default 'auto' shares them on a cgroup v1 host, tested at the end)."""
    monkeypatch.setenv("VIRTMIX_IDMAP", "isolated")


def site_file(tmp_path: Path, containers: str, storage: Path | None = None) -> Path:
    storage = storage or tmp_path / "storage"
    inv = tmp_path / "site.yaml"
    inv.write_text(textwrap.dedent(f"""\
        settings: {{storage_dir: {storage}}}
        hosts:
          hv1:
            containers:
        """) + textwrap.indent(textwrap.dedent(containers), " " * 6))
    return inv


def idmaps(inv: Path) -> dict[str, tuple[str, str, str, str] | None]:
    site = load_site(inv)
    out = {}
    for e in site.entries:
        root = etree.fromstring(render_domain(site, e).encode())
        uid, gid = root.find("idmap/uid"), root.find("idmap/gid")
        out[e.name] = None if uid is None else (uid.get("target"), gid.get("target"),
                                                uid.get("count"), gid.get("count"))
    return out


# -- the allocator --------------------------------------------------------------------------
def test_slots_are_65536_ids_above_the_old_shared_range_and_below_2_to_the_31():
    assert slot_range(0)[1] == BASE > 100000 + 65536
    last = slot_range(home_slot("x") * 0 + (MAX_ID - BASE) // COUNT - 1)
    assert last[1] + last[2] <= MAX_ID
    # the highest id any name can get fits a signed int (kernel 6.1's devpts gid= option)
    assert max(slot_range(home_slot(f"ct{i}"))[1] for i in range(5000)) + COUNT - 1 < 2**31
    assert slot_range(SLOTS - 1)[1] + COUNT - 1 < 2**31


def test_a_name_gets_the_same_range_every_time_and_probing_skips_taken_ones():
    a = Allocator().pick("web")
    assert a == Allocator().pick("web") == slot_range(home_slot("web"))
    # "web"'s home slot taken by someone else: the next slot up
    b = Allocator([a]).pick("web")
    assert b == slot_range(home_slot("web") + 1)
    # an explicit, unaligned range that touches the home slot pushes it on as well
    c = Allocator([(0, a[1] + 5, 10, a[1] + 5)]).pick("web")
    assert c == b and not overlaps(c, a)


def test_gids_are_checked_too():
    a = (0, 200000, 65536, 300000)
    assert overlaps(a, (0, 900000, 10, 300005))
    assert not overlaps(a, (0, 900000, 10, 900000))


def test_recorded_ranges_are_read_from_state_files(tmp_path):
    for name, idmap in (("old", [0, 100000, 65536]), ("new", [0, BASE, COUNT, BASE]),
                        ("priv", None)):
        d = tmp_path / "containers" / name
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"idmap": idmap}))
    (tmp_path / "containers" / "junk").mkdir()
    (tmp_path / "containers" / "junk" / "state.json").write_text("{not json")
    assert recorded_ranges(str(tmp_path)) == {"old": (0, 100000, 65536, 100000),
                                              "new": (0, BASE, COUNT, BASE)}
    assert pick_for("old", str(tmp_path)) == (0, 100000, 65536, 100000)  # never reshuffled


# -- rendering: built containers each their own, given trees the shared one -----------------
def test_built_containers_get_distinct_ranges_and_given_trees_keep_100000(tmp_path):
    inv = site_file(tmp_path, """\
        a: {rootfs: {suite: bookworm}}
        b: {rootfs: {suite: bookworm}}
        given: {rootfs: {path: /srv/t}, privileged: false}
        priv: {rootfs: {suite: bookworm}, privileged: true}
        mine: {rootfs: {suite: bookworm}, idmap: {uid: 200000, gid: 300000, count: 1000}}
        """)
    got = idmaps(inv)
    assert got["a"] != got["b"]
    for n in ("a", "b"):
        target = slot_range(home_slot(n))[1]
        assert got[n] == (str(target), str(target), "65536", "65536")
    assert got["given"] == ("100000", "100000", "65536", "65536")
    assert got["priv"] is None
    assert got["mine"] == ("200000", "300000", "1000", "1000")
    assert idmaps(inv) == got  # deterministic


def test_a_recorded_range_wins_and_others_probe_past_it(tmp_path):
    storage = tmp_path / "storage"
    # "b" already exists on this host with the slot "a" would want, and "a" is new.
    want_a = slot_range(home_slot("a"))
    d = storage / "containers" / "b"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"idmap": list(want_a)}))
    inv = site_file(tmp_path, """\
        a: {rootfs: {suite: bookworm}}
        b: {rootfs: {suite: bookworm}}
        """, storage)
    got = idmaps(inv)
    assert got["b"][0] == str(want_a[1])  # recorded: kept
    assert int(got["a"][0]) != want_a[1] and got["a"] != got["b"]


def test_domain_metadata_records_the_range(tmp_path):
    inv = site_file(tmp_path, "a: {rootfs: {suite: bookworm}}\n")
    site = load_site(inv)
    root = etree.fromstring(render_domain(site, site.entries[0]).encode())
    meta = root.find("metadata/{https://virtmix.dev/xmlns/domain/1}entry")
    t = slot_range(home_slot("a"))[1]
    assert meta.get("idmap") == f"{t}:{t}:65536"


def test_explain_says_where_the_range_comes_from(tmp_path, monkeypatch):
    from virtmix.cli import base

    # Rich reads COLUMNS once, when the CLI's console is made at import: wide enough here
    # that the table keeps the phrase on one line, however this process was started.
    monkeypatch.setattr(base.out, "width", 400)
    inv = site_file(tmp_path, "a: {rootfs: {suite: bookworm}}\n")
    res = runner.invoke(app, ["explain", str(inv), "a"])
    assert res.exit_code == 0, res.output
    assert "a range of its own" in res.output


# -- bad idmap keys -------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "phrase"), [
    ("idmap: {uid: 0, count: 65536}", "greater than or equal to 1"),
    ("idmap: {uid: 4294960000, count: 65536}", "passes the last host id"),
    ("idmap: {uid: 200000, count: 0}", "greater than or equal to 1"),
    ("idmap: {uid: 200000, cnt: 5}", "cnt"),
    ("idmap: {uid: 200000}\n  privileged: true", "privileged container has no id map"),
])
def test_bad_idmap_is_an_inventory_error(tmp_path, body, phrase):
    inv = site_file(tmp_path, f"a:\n  rootfs: {{suite: bookworm}}\n  {body}\n")
    res = runner.invoke(app, ["validate", str(inv)])
    assert res.exit_code == 3, res.output
    assert "hosts.hv1.containers.a.idmap" in res.output and phrase in res.output
    assert "Traceback" not in res.output


def test_two_explicit_ranges_that_overlap_are_refused(tmp_path):
    inv = site_file(tmp_path, """\
        a: {rootfs: {suite: bookworm}, idmap: {uid: 200000}}
        b: {rootfs: {suite: bookworm}, idmap: {uid: 265535, count: 10}}
        c: {rootfs: {suite: bookworm}, idmap: {uid: 265536}}
        """)
    res = runner.invoke(app, ["validate", str(inv)])
    assert res.exit_code == 3, res.output
    assert "hosts.hv1.containers.b.idmap" in res.output and "overlap" in res.output
    assert "containers.a" in res.output


def test_same_explicit_range_on_two_hosts_is_fine(tmp_path):
    inv = tmp_path / "site.yaml"
    inv.write_text(textwrap.dedent(f"""\
        settings: {{storage_dir: {tmp_path}/st}}
        hosts:
          hv1:
            containers: {{a: {{rootfs: {{suite: bookworm}}, idmap: {{uid: 200000}}}}}}
          hv2:
            uri: qemu+ssh://root@hv2/system
            lxc_uri: lxc+ssh://root@hv2/system
            containers: {{b: {{rootfs: {{path: /t}}, idmap: {{uid: 200000}}}}}}
        """))
    res = runner.invoke(app, ["validate", str(inv)])
    assert res.exit_code == 0, res.output


def test_a_tree_is_never_made_for_a_range_another_container_holds(tmp_path):
    from virtmix.errors import ConflictError
    from virtmix.rootfs import _choose_idmap
    from virtmix.rootfs.storage import Storage

    st = Storage(tmp_path / "st")
    st.ensure()
    st.container_dir("b").mkdir()
    st.write_state("b", {"idmap": [0, 300000, 65536, 300000]})
    with pytest.raises(ConflictError, match="overlap those recorded for container b"):
        _choose_idmap("a", st, (0, 330000, 65536, 330000))
    assert _choose_idmap("a", st, (0, 330000, 65536, 330000), check_overlap=False)
    assert _choose_idmap("b", st, (0, 300000, 65536, 300000))  # its own: fine
    picked = _choose_idmap("a", st, None)
    assert picked == slot_range(home_slot("a")) and not overlaps(picked, (0, 300000, 65536,
                                                                          300000))


def test_shared_mode_gives_every_new_built_container_the_old_range(tmp_path, monkeypatch):
    """settings.idmap: shared (or VIRTMIX_IDMAP=shared): for hosts whose containers share one
    name=systemd cgroup v1 tree, where systemd fails in any range but the one that owns it."""
    inv = site_file(tmp_path, "a: {rootfs: {suite: bookworm}}\n"
                              "b: {rootfs: {suite: bookworm}}\n")
    text = inv.read_text().replace("settings: {", "settings: {idmap: shared, ")
    inv.write_text(text)
    assert set(idmaps(inv).values()) == {("100000", "100000", "65536", "65536")}
    monkeypatch.setenv("VIRTMIX_IDMAP", "shared")
    assert pick_for("a", str(tmp_path / "none")) == (0, 100000, 65536, 100000)
    inv.write_text(text.replace("idmap: shared", "idmap: isolated"))
    assert idmaps(inv)["a"][0] == str(slot_range(home_slot("a"))[1])  # the setting wins


def test_auto_isolates_on_cgroup_v2_and_shares_on_v1(tmp_path, monkeypatch):
    """'auto' (the default): a host declared `cgroups: v2` and a guest virtmix built give
    each container its own range; a cgroup v1 host, whose one name=systemd hierarchy libvirt
    hands to the last container started, keeps the shared range."""
    monkeypatch.delenv("VIRTMIX_IDMAP")
    assert isolated(None, "v2") and not isolated(None, "v1") and not isolated(None, None)
    assert isolated("isolated", "v1") and not isolated("shared", "v2")
    inv = tmp_path / "site.yaml"
    inv.write_text(textwrap.dedent(f"""\
        settings: {{storage_dir: {tmp_path / 'st'}}}
        hosts:
          v1host: {{uri: "qemu+ssh://root@v1.example/system",
                    lxc_uri: "lxc+ssh://root@v1.example/system", cgroups: v1,
                    containers: {{a: {{rootfs: {{suite: bookworm}}}}}}}}
          v2host: {{uri: "qemu+ssh://root@v2.example/system",
                    lxc_uri: "lxc+ssh://root@v2.example/system", cgroups: v2,
                    containers: {{b: {{rootfs: {{suite: bookworm}}}}}}}}
        """))
    got = idmaps(inv)
    assert got["a"] == ("100000", "100000", "65536", "65536")
    assert got["b"] == tuple(str(x) for x in (slot_range(home_slot("b"))[1],) * 2) + (
        "65536", "65536")


def test_the_shared_range_is_no_conflict_between_containers(tmp_path):
    """idmap: shared (and 'auto' on a cgroup v1 host) gives every container 100000..: a
    second container's tree in the same storage is made for it, not refused."""
    from virtmix.rootfs import _choose_idmap
    from virtmix.rootfs.storage import Storage

    st = Storage(tmp_path / "st")
    st.ensure()
    st.container_dir("b").mkdir()
    st.write_state("b", {"idmap": [0, 100000, 65536, 100000]})
    assert _choose_idmap("a", st, (0, 100000, 65536, 100000)) == (0, 100000, 65536, 100000)
