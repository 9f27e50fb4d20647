"""Profile merging: properties (hypothesis) and the extends chain."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtmix.errors import InventoryError
from virtmix.inventory.profiles import ProfileLibrary, deep_merge

leaf = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=3))
trees = st.recursive(st.dictionaries(st.text("abc", min_size=1, max_size=2), leaf, max_size=4),
                     lambda children: st.dictionaries(st.text("abc", min_size=1, max_size=2),
                                                      children | leaf, max_size=4),
                     max_leaves=12)


def leaves(tree, prefix=()):
    """Leaf values; an empty mapping is no leaf (merging it adds nothing to the base)."""
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


@given(trees, trees)
def test_entry_keys_always_win(base, over):
    merged = deep_merge(base, over)
    for path, value in leaves(over):
        assert get(merged, path) == value


@given(trees, trees)
def test_merge_never_mutates_inputs(base, over):
    import copy

    b, o = copy.deepcopy(base), copy.deepcopy(over)
    deep_merge(base, over)
    assert (base, over) == (b, o)


@given(trees)
def test_merge_with_empty_is_identity(tree):
    assert deep_merge(tree, {}) == tree
    assert deep_merge({}, tree) == tree


@pytest.mark.parametrize("key", ["rootfs", "image"])
def test_an_entry_naming_the_other_form_replaces_its_profiles(key):
    path = {key: {"path": "/srv/base.qcow2"}}
    build = {key: {"distro": "debian", "suite": "trixie"}}
    assert deep_merge(path, build) == build and deep_merge(build, path) == path
    # the same form still merges key by key
    assert deep_merge(build, {key: {"suite": "bookworm"}}) == {
        key: {"distro": "debian", "suite": "bookworm"}}


def write(d: Path, name: str, text: str) -> None:
    (d / f"{name}.yaml").write_text(text)


def test_chain_merges_root_first(tmp_path):
    write(tmp_path, "a", "kind: container\nmemory: 1GiB\ncpu: {shares: 100, cpuset: '0'}\n")
    write(tmp_path, "b", "kind: container\nextends: a\ncpu: {shares: 200}\n")
    merged, chain = ProfileLibrary([tmp_path]).resolve("b", "container", used_at=("f", "k"))
    assert chain == ("b", "a")
    assert merged == {"memory": "1GiB", "cpu": {"shares": 200, "cpuset": "0"}}


def test_user_dir_overrides_shipped(tmp_path):
    shipped, mine = tmp_path / "s", tmp_path / "m"
    shipped.mkdir()
    mine.mkdir()
    write(shipped, "x", "kind: container\nmemory: 1GiB\n")
    write(mine, "x", "kind: container\nmemory: 2GiB\n")
    merged, _ = ProfileLibrary([shipped, mine]).resolve("x", "container", used_at=("f", "k"))
    assert merged["memory"] == "2GiB"


def test_cycle_is_an_error(tmp_path):
    write(tmp_path, "a", "kind: container\nextends: b\n")
    write(tmp_path, "b", "kind: container\nextends: a\n")
    with pytest.raises(InventoryError, match="cycle: a -> b -> a"):
        ProfileLibrary([tmp_path]).resolve("a", "container", used_at=("f", "k"))


def test_kind_mismatch(tmp_path):
    write(tmp_path, "g", "kind: guest\n")
    with pytest.raises(InventoryError, match="is for a guest, but this entry is a container"):
        ProfileLibrary([tmp_path]).resolve("g", "container", used_at=("f", "k"))


def test_profile_cgroup_block_is_folded(tmp_path):
    write(tmp_path, "c", "kind: container\ncgroup: {cpu.shares: 512}\n")
    merged, _ = ProfileLibrary([tmp_path]).resolve("c", "container", used_at=("f", "k"))
    assert merged == {"cpu": {"shares": 512}}


def test_shipped_profiles_all_load():
    from virtmix.util import paths

    lib = ProfileLibrary([paths.profiles_dir()])
    assert {"debian", "apache", "mysql-small", "kvm-small", "lxc-host"} <= set(lib.names())
    for name in lib.names():
        prof = lib.get(name, used_at=("f", "k"))
        lib.resolve(name, prof.kind, used_at=("f", "k"))
