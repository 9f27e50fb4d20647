"""The pure placement function: spread, pack, anti-affinity, full hosts, cpusets, stability."""

from __future__ import annotations

import pytest

from virtmix.converge.placement import (
    PACK,
    SPREAD,
    HostState,
    PlacementFailure,
    Request,
    place,
)

GIB = 1024 * 1024
CPUS4 = frozenset(range(4))


def hosts(*specs: tuple) -> dict[str, HostState]:
    """hosts(("hv1", memory GiB, used GiB[, max_domains[, cpus]]), ...)"""
    out = {}
    for spec in specs:
        name, mem, used, *rest = spec
        h = HostState(name, int(mem * GIB), rest[1] if len(rest) > 1 else CPUS4,
                      rest[0] if rest else None, used_kib=int(used * GIB))
        out[name] = h
    return out


def req(name: str, gib: float = 1, cands: tuple[str, ...] = ("hv1", "hv2", "hv3"),
        **kw) -> Request:
    return Request(name, int(gib * GIB), cands, **kw)


def where(decisions) -> dict[str, str]:
    return {d.name: d.host for d in decisions}


CASES = [
    # (id, hosts, requests, expected placement)
    ("spread picks most free memory",
     [("hv1", 8, 6), ("hv2", 8, 2), ("hv3", 8, 4)], [req("a")], {"a": "hv2"}),
    ("spread balances a batch",
     [("hv1", 4, 0), ("hv2", 4, 0), ("hv3", 4, 0)], [req(n) for n in "abc"],
     {"a": "hv1", "b": "hv2", "c": "hv3"}),
    ("pack fills the fullest host that fits",
     [("hv1", 8, 6), ("hv2", 8, 2), ("hv3", 8, 7.5)], [req("a", policy=PACK)], {"a": "hv1"}),
    ("pack keeps filling one host",
     [("hv1", 4, 0), ("hv2", 4, 0), ("hv3", 4, 0)],
     [req(n, policy=PACK) for n in "abc"], {"a": "hv1", "b": "hv1", "c": "hv1"}),
    ("anti-affinity members never share a host",
     [("hv1", 64, 0), ("hv2", 8, 0), ("hv3", 8, 0)],
     [req(n, policy=PACK, anti_affinity="db") for n in "abc"],
     {"a": "hv2", "b": "hv3", "c": "hv1"}),
    ("a full host is skipped",
     [("hv1", 8, 7.5), ("hv2", 2, 0), ("hv3", 8, 7.9)], [req("a", 2, policy=PACK)],
     {"a": "hv2"}),
    ("max_domains counts domains",
     [("hv1", 64, 0, 1), ("hv2", 8, 0), ("hv3", 8, 0, 0)], [req("a"), req("b")],
     {"a": "hv1", "b": "hv2"}),
    ("a cpuset goes to a host that has those CPUs",
     [("hv1", 64, 0), ("hv2", 8, 0, None, frozenset(range(16))), ("hv3", 8, 0)],
     [req("a", cpuset=frozenset({12, 13}))], {"a": "hv2"}),
    ("only the entry's candidates count",
     [("hv1", 64, 0), ("hv2", 8, 0), ("hv3", 8, 0)], [req("a", cands=("hv3", "hv2"))],
     {"a": "hv3"}),
    ("an existing placement stays, even where spread would not put it",
     [("hv1", 8, 7), ("hv2", 8, 0), ("hv3", 8, 0)],
     [req("a", current="hv1", current_policy=SPREAD), req("b")], {"a": "hv1", "b": "hv2"}),
    ("an existing member's anti-affinity group binds new members",
     [("hv1", 8, 0), ("hv2", 8, 1), ("hv3", 8, 7.5)],
     [req("a", anti_affinity="db", current="hv1"), req("b", anti_affinity="db")],
     {"a": "hv1", "b": "hv2"}),
]


@pytest.mark.parametrize("host_specs,requests,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_placement_table(host_specs, requests, expected):
    assert where(place(requests, hosts(*host_specs))) == expected


def test_unreachable_host_makes_placement_choose_another():
    hs = hosts(("hv1", 64, 0), ("hv2", 8, 0))
    hs["hv1"].down = "cannot connect"
    [d] = place([req("a", cands=("hv1", "hv2"))], hs)
    assert d.host == "hv2" and "not hv1: unreachable (cannot connect)" in d.why


FAILURES = [
    ("memory", [("hv1", 2, 1), ("hv2", 2, 1.5)], [req("a", 4, cands=("hv1", "hv2"))],
     "no host satisfies memory 4GiB for a", ["hv1: full: 1GiB free", "hv2: full: 512MiB free"]),
    ("anti-affinity", [("hv1", 8, 0), ("hv2", 8, 0)],
     [req(n, cands=("hv1", "hv2"), anti_affinity="db") for n in "abc"],
     "no host satisfies anti_affinity db for c", ["already holds a member"]),
    ("cpuset", [("hv1", 8, 0), ("hv2", 8, 0)],
     [req("a", cands=("hv1", "hv2"), cpuset=frozenset({6}))],
     "no host satisfies cpuset 6 for a", ["has no CPU 6 for cpuset 6 (cpus 0-3)"]),
    ("max_domains", [("hv1", 8, 0, 0), ("hv2", 8, 0, 0)], [req("a", cands=("hv1", "hv2"))],
     "no host satisfies max_domains for a", ["full: max_domains 0 reached"]),
]


@pytest.mark.parametrize("host_specs,requests,message,details", [f[1:] for f in FAILURES],
                         ids=[f[0] for f in FAILURES])
def test_placement_failures_name_the_constraint(host_specs, requests, message, details):
    with pytest.raises(PlacementFailure) as exc:
        place(requests, hosts(*host_specs))
    assert message in str(exc.value)
    for detail in details:
        assert detail in str(exc.value)
    assert not exc.value.all_down


def test_every_candidate_down_is_said_so():
    hs = hosts(("hv1", 8, 0), ("hv2", 8, 0))
    for h in hs.values():
        h.down = "no route"
    with pytest.raises(PlacementFailure) as exc:
        place([req("a", cands=("hv1", "hv2"))], hs)
    assert exc.value.all_down and "a reachable host" in str(exc.value)


def test_spread_prefers_a_host_where_the_cpuset_is_not_pinned_yet():
    hs = hosts(("hv1", 64, 0), ("hv2", 8, 0))
    hs["hv1"].pinned = {0: 2, 1: 2}
    [d] = place([req("a", cands=("hv1", "hv2"), cpuset=frozenset({0, 1}))], hs)
    assert d.host == "hv2" and "pinned by 0 there" in d.why


def test_decisions_take_capacity_and_say_why():
    hs = hosts(("hv1", 4, 0), ("hv2", 4, 1))
    ds = place([req("a", 2, cands=("hv1", "hv2")), req("b", 2, cands=("hv1", "hv2"),
                                                       policy=PACK)], hs)
    assert [(d.host, d.new, d.policy) for d in ds] == [("hv1", True, SPREAD),
                                                      ("hv1", True, PACK)]
    assert ds[0].why == "placed: spread, most free memory 4GiB"
    assert ds[1].why == "placed: pack, fullest host that fits, 2GiB free"
    assert hs["hv1"].free_kib == 0 and hs["hv1"].domains == 2


def test_placement_is_stable_when_run_again():
    """Run twice over the same hosts, with the first run's choices as existing placements:
    nothing moves."""
    specs = [("hv1", 8, 1), ("hv2", 8, 3), ("hv3", 8, 2)]
    first = place([req(n) for n in "abcdef"], hosts(*specs))
    hs = hosts(*specs)
    for d in first:  # what the hosts now report: those domains take their memory there
        hs[d.host].take(GIB, None, None)
    again = place([req(d.name, current=d.host, current_policy=d.policy) for d in first]
                  + [req("g")], hs)
    assert where(again[:6]) == where(first)
    assert not any(d.new for d in again[:6]) and again[6].new
