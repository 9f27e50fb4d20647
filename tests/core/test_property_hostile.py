"""Property test (SECURITY.md): inventories generated from `virtmix schema`'s JSON Schema,
with hostile strings, numbers and keys in every field, never crash virtmix.

For each: `render --out` exits 0 or 3 (never 1, an unexpected error); it ends in bounded
time; every rendered document is well-formed XML that libvirt's RelaxNG schema accepts;
files appear only inside --out, and nowhere else in the test's directory (the storage
directory the inventory names is never created).

A few dozen examples by default; HYPOTHESIS_PROFILE-independent: set VIRTMIX_PROPERTY_EXAMPLES
for a longer hunt.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.inventory.model import inventory_json_schema
from virtmix.render.schema_check import check_xml

runner = CliRunner()
SCHEMA = inventory_json_schema()
DEFS = SCHEMA["$defs"]
EXAMPLES = int(os.environ.get("VIRTMIX_PROPERTY_EXAMPLES", "40"))
# Keys that name other files: left to their own tests (a missing templates_dir is exit 4).
SKIP_KEYS = {"templates_dir", "profiles_dir", "hook", "profile"}
ALWAYS = {"hosts", "containers"}  # so that most examples have domains to render

HOSTILE_STRINGS = [
    "", " ", "-", "--help", "-oProxyCommand=id", "..", "../../etc/passwd", "/", "/etc",
    "/etc/shadow", "a\nb", "web\n", "\r", "\t", "\x00", "\x1b[31m", "\u202e", "\u2028",
    "[trusted=yes] http://x/debian", "http://x/debian bookworm main", "ftp://x/",
    "$(id)", "`id`", "; rm -rf /", "' or 1=1 --", "<script>", "]]>", "&amp;", "\"'<>&",
    "%s%s%s", "{{ 7*7 }}", "{% include '/etc/passwd' %}", "ssh-ed25519 AAAA", "null", "~",
    "0-99999999", "99999999999999999999TiB", "1e400", "-1", "0x10", "é", "\U0001f600",
    "a" * 300, "x" * 5000, "lxc:///", "LXC:///system", "qemu+ext:///?command=/bin/sh",
    "qemu+ssh://-x/system", "qemu+ssh://h/system?socket=/s", "10.0.0.1/33", "::1",
]
HOSTILE_SCALARS = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=8),  # !!binary
    st.dates(),  # !!timestamp
    st.frozensets(st.sampled_from(["a", "b\n"]), max_size=2).map(set),  # !!set
)
HOSTILE_KEYS = st.one_of(st.sampled_from(HOSTILE_STRINGS[:30]), st.integers(-5, 5), st.none(),
                         st.booleans(), st.text(max_size=8))
NAMES = st.one_of(st.sampled_from(["web", "db", "c1", "g1", "local", "n1", "h1"]),
                  st.from_regex(r"\A[a-z][a-z0-9-]{0,8}\Z"))
ANY = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(HOSTILE_KEYS, inner, max_size=3)),
    max_leaves=6)


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = DEFS[node["$ref"].rsplit("/", 1)[1]]
    return node


KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0h5N0s1wh1A6dBUSbXUhQJ9Bwz3uYtN8X2WcDm3vGq "
       "admin@desk")
# Plausible values per field name, so that unmutated examples are mostly valid.
GOOD = {
    "mac": ["52:54:00:00:00:01", "52:54:00:aa:bb:cc"], "ipv4": ["10.9.0.5/24", "10.9.0.1/24"],
    "gateway": ["10.9.0.1"], "start": ["10.9.0.100"], "end": ["10.9.0.150"],
    "cpuset": ["0-1", "0"], "cpus": ["0-3"], "emulatorpin": ["0"],
    "memory": ["256MiB", "1GiB"], "size": ["8GiB"], "hard_limit": ["512MiB"],
    "soft_limit": ["128MiB"], "swap_hard_limit": ["1GiB"], "min_guarantee": ["64MiB"],
    "path": ["/srv/tree"], "suite": ["bookworm"], "mirror": ["http://deb.example/debian"],
    "locale": ["C.UTF-8"], "timezone": ["Etc/UTC"], "ssh_keys": [KEY], "packages": ["nginx"],
    "components": ["main"], "uri": ["qemu:///system"], "lxc_uri": ["lxc:///system"],
    "bridge": ["br0"], "network": ["n1"], "name": ["eth0", "site1"], "hostname": ["web"],
    "description": ["a domain"], "kernel": ["/boot/vmlinuz"], "initrd": ["/boot/initrd"],
    "source": ["/srv/data"], "target": ["/data"], "storage_dir": ["/srv/virtmix"],
    "architecture": ["amd64"], "machine": ["pc"], "arch": ["x86_64"], "model": ["virtio"],
    "init": ["/sbin/init"], "cmdline": ["console=ttyS0"], "host": ["local"],
    "cgroup": ["cpu.shares = 512"],
}


def from_schema(node: dict, field: str = "", depth: int = 0) -> st.SearchStrategy:
    """Plausible values shaped by the schema (hostile ones are put in by `mutated`)."""
    node = _resolve(node)
    for union in ("anyOf", "oneOf"):
        if union in node:
            return st.one_of([from_schema(n, field, depth) for n in node[union]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        props = {k: v for k, v in node["properties"].items() if k not in SKIP_KEYS}
        required = {k: from_schema(v, k, depth + 1) for k, v in props.items()
                    if k in node.get("required", ()) or k in ALWAYS}
        return st.fixed_dictionaries(
            required, optional={k: from_schema(v, k, depth + 1) for k, v in props.items()
                                if k not in required})
    if kind == "object":
        sub = node.get("additionalProperties")
        values = from_schema(sub, field, depth + 1) if isinstance(sub, dict) else ANY
        keys = st.integers(0, 3) if field == "vcpupin" else NAMES
        return st.dictionaries(keys, values, min_size=1 if depth <= 4 else 0, max_size=2)
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), field, depth + 1), max_size=2)
    if kind == "string":
        return st.sampled_from(GOOD.get(field, ["x1"]))
    if kind == "integer":
        return st.integers(min_value=0, max_value=4)
    if kind == "boolean":
        return st.booleans()
    return st.just("x1")


PLACEMENT_KEYS = ("host", "hosts", "group", "anti_affinity", "placement")


def _thin_placement(draw, inventory: Any) -> None:
    """Placement (top-level containers:/guests:, and the keys that choose a host) stays
    rare: an entry under hosts: with placement keys, or a placed name used twice, is an
    error, and nearly every example would be refused before the XML checks run."""
    if not isinstance(inventory, dict):
        return
    for key in ("containers", "guests"):
        if key in inventory and draw(st.integers(0, 7)) != 7:
            del inventory[key]

    def entries(section: Any) -> list[dict]:
        found = [e for e in (section.values() if isinstance(section, dict) else [])
                 if isinstance(e, dict)]
        return found + [n for e in found for n in entries(e.get("containers"))]

    hosts = inventory.get("hosts")
    for host in (hosts.values() if isinstance(hosts, dict) else []):
        if isinstance(host, dict):
            for entry in entries(host.get("containers")) + entries(host.get("guests")):
                if draw(st.integers(0, 7)) != 7:
                    for key in PLACEMENT_KEYS:
                        entry.pop(key, None)


@st.composite
def mutated(draw, clean: st.SearchStrategy) -> Any:
    """A plausible inventory with 0-3 hostile changes at random places: a value replaced by
    a hostile scalar or structure, or a hostile key added to a mapping."""
    inventory = draw(clean)
    _thin_placement(draw, inventory)
    for _ in range(draw(st.integers(0, 3))):
        node = inventory
        while True:
            children = list(node.items()) if isinstance(node, dict) else \
                list(enumerate(node)) if isinstance(node, list) else []
            if not children:
                break
            key, child = draw(st.sampled_from(children))
            if not isinstance(child, dict | list) or draw(st.integers(0, 3)) == 0:
                if draw(st.booleans()) or not isinstance(node, dict):
                    node[key] = draw(st.one_of(HOSTILE_SCALARS, ANY))
                else:
                    node[draw(HOSTILE_KEYS)] = draw(ANY)
                break
            node = child
    return inventory


INVENTORIES = mutated(from_schema(SCHEMA))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(inventory=INVENTORIES, own_storage=st.booleans())
def test_hostile_inventories_never_crash(tmp_path_factory, monkeypatch, inventory, own_storage):
    work = tmp_path_factory.mktemp("prop")
    monkeypatch.setenv("XDG_CACHE_HOME", str(work / "cache"))
    monkeypatch.chdir(work)
    storage = work / "storage"
    if own_storage and isinstance(inventory, dict):
        inventory = {**inventory, "settings": {"storage_dir": str(storage)}}
    inv = work / "site.yaml"
    inv.write_text(yaml.safe_dump(inventory, allow_unicode=False))
    out = work / "out"
    before = _files(work)
    t0 = time.monotonic()
    result = runner.invoke(app, ["render", str(inv), "--out", str(out)])
    elapsed = time.monotonic() - t0
    assert result.exit_code in (0, 3), (result.exit_code, result.stderr, inv.read_text()[:2000])
    assert "Traceback" not in result.stderr
    assert elapsed < 5.0, f"{elapsed:.1f}s"
    after = _files(work)
    new = {f for f in after - before if not f.startswith(("out", "cache"))}
    assert not new, new
    assert not storage.exists()
    if result.exit_code == 3:
        assert result.stderr.startswith("virtmix: error: ")
        assert not out.exists()
        return
    for path in out.rglob("*.xml"):
        xml = path.read_text()
        etree.fromstring(xml.encode())  # well formed
        kind = "network" if path.name.startswith("network-") else "domain"
        check_xml(xml, kind, str(path))
    assert all(p.suffix == ".xml" or p.is_dir() for p in out.rglob("*"))


def test_the_generator_reaches_valid_inventories(tmp_path):
    """Not every example is refused: many load (so the rendering and XML checks above run)."""
    from hypothesis import Phase

    from virtmix.errors import InventoryError
    from virtmix.inventory.load import load_site

    outcomes: list[bool] = []

    @settings(max_examples=60, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(INVENTORIES)
    def probe(inventory):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(inventory))
        try:
            outcomes.append(bool(load_site(path).entries))
        except InventoryError:
            outcomes.append(False)

    probe()
    assert sum(outcomes) >= 5, f"{sum(outcomes)} of {len(outcomes)} loaded with domains"


def _json_schema_keys(node: Any, seen: set[str]) -> set[str]:
    node = _resolve(node) if isinstance(node, dict) else node
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            out.add(k)
            out |= _json_schema_keys(v, seen)
        for union in ("anyOf", "oneOf"):
            for n in node.get(union, []):
                ref = n.get("$ref", "")
                if ref and ref in seen:
                    continue
                seen.add(ref)
                out |= _json_schema_keys(n, seen)
        for sub in ("additionalProperties", "items"):
            if isinstance(node.get(sub), dict):
                ref = node[sub].get("$ref", "")
                if ref and ref in seen:
                    continue
                seen.add(ref)
                out |= _json_schema_keys(node[sub], seen)
    return out


def test_every_schema_field_is_generated():
    """The generator walks the whole schema (minus the file-naming keys)."""
    keys = _json_schema_keys(SCHEMA, set())
    assert {"hosts", "containers", "guests", "rootfs", "mirror", "ssh_keys", "locale",
            "vcpupin", "mounts", "dhcp", "storage_dir"} <= keys
