"""Pure parts of rootfs: specs, cache keys, apt sources, network files (no builds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtmix.errors import RootfsError
from virtmix.rootfs.customise import network_file
from virtmix.rootfs.sources import resolve_sources
from virtmix.rootfs.spec import ContainerSetup, InterfaceSetup, RootfsSpec


def test_cache_key_is_stable_and_ignores_package_order():
    a = RootfsSpec(packages=("less", "iproute2"), architecture="amd64")
    b = RootfsSpec(packages=("iproute2", "less", "less"), architecture="amd64")
    assert a.cache_key() == b.cache_key()
    assert a.cache_key().startswith("debian-bookworm-minbase-amd64-")


@pytest.mark.parametrize("change", [
    {"suite": "trixie"}, {"variant": "buildd"}, {"packages": ("less",)},
    {"components": ("main", "contrib")}, {"architecture": "arm64"},
])
def test_cache_key_changes_with_every_tree_field(change):
    base = RootfsSpec(architecture="amd64")
    assert RootfsSpec(**{"architecture": "amd64", **change}).cache_key() != base.cache_key()


def test_cache_key_follows_hook_content_not_path(tmp_path: Path):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\necho one\n")
    spec = RootfsSpec(architecture="amd64", hook=str(hook))
    first = spec.cache_key()
    assert first != RootfsSpec(architecture="amd64").cache_key()
    hook.write_text("#!/bin/sh\necho two\n")
    assert spec.cache_key() != first


def test_missing_hook_is_a_rootfs_error(tmp_path: Path):
    with pytest.raises(RootfsError, match="hook .*cannot read"):
        RootfsSpec(architecture="amd64", hook=str(tmp_path / "nope")).cache_key()


@pytest.mark.parametrize("kw, msg", [
    ({"distro": "fedora"}, "distro 'fedora'"),
    ({"variant": "huge"}, "variant 'huge'"),
    ({"suite": "../etc"}, "suite"),
    ({"packages": ("ok", "bad;rm")}, "package"),
    ({"components": ()}, "components"),
])
def test_bad_spec_fields_are_refused(kw, msg):
    with pytest.raises(RootfsError, match=msg):
        RootfsSpec(**kw)


@pytest.mark.parametrize("kw, msg", [
    ({"name": "../x"}, "container name"),
    ({"name": "c1", "root_password": "hunter2"}, "root_password"),
    ({"name": "c1", "ssh_keys": ("not a key",)}, "ssh_keys"),
    ({"name": "c1", "timezone": "../../etc/passwd"}, "timezone"),
    ({"name": "c1", "hostname": "bad_host!"}, "hostname"),
])
def test_bad_container_setup_is_refused(kw, msg):
    with pytest.raises(RootfsError, match=msg):
        ContainerSetup(**kw)


def test_interface_needs_dhcp_or_cidr():
    with pytest.raises(RootfsError, match="CIDR"):
        InterfaceSetup("eth0", dhcp=False, ipv4="192.0.2.5")
    with pytest.raises(RootfsError, match="dhcp or an ipv4"):
        InterfaceSetup("eth0", dhcp=False)


def test_network_files():
    static = network_file(InterfaceSetup("eth1", dhcp=False, ipv4="192.0.2.5/24",
                                         gateway="192.0.2.1"))
    assert "Name=eth1" in static and "Address=192.0.2.5/24" in static
    assert "Gateway=192.0.2.1" in static and "DHCP" not in static
    assert "DHCP=ipv4" in network_file(InterfaceSetup("eth0"))


def test_resolver_defaults_to_the_networks_dnsmasq_and_dns_wins(tmp_path: Path):
    """The first interface's inventory network (with ipv4) answers DNS; `dns:` overrides;
    a bridge or no interface: no resolver (and resolv.conf says so)."""
    from virtmix.inventory.load import load_site
    from virtmix.rootfs.customise import set_network
    from virtmix.rootfs.from_model import setup_from_model

    inv = tmp_path / "site.yaml"
    inv.write_text(
        "networks: {lan: {host: h, bridge: vmixtbr9, ipv4: 10.9.0.1/24, dhcp: true}}\n"
        "hosts:\n  h:\n    containers:\n"
        "      a: {interfaces: [{network: lan}]}\n"
        "      b: {interfaces: [{network: lan}], dns: [192.0.2.53, 192.0.2.54]}\n"
        "      c: {interfaces: [{bridge: br0}]}\n")
    site = load_site(inv)
    setups = {n: setup_from_model(n, site.find(n).spec, site.inventory.networks)
              for n in "abc"}
    assert setups["a"].nameservers == ("10.9.0.1",)
    assert setups["b"].nameservers == ("192.0.2.53", "192.0.2.54")
    assert setups["c"].nameservers == ()
    tree = tmp_path / "tree"
    set_network(tree, setups["b"])
    assert (tree / "etc/resolv.conf").read_text().splitlines()[1:] == [
        "nameserver 192.0.2.53", "nameserver 192.0.2.54"]
    with pytest.raises(RootfsError, match="nameserver 'x'"):
        ContainerSetup(name="c1", nameservers=("x",))


def _etc(tmp_path: Path, sources: str, keyring: Path | None) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    text = sources.replace("KEYRING", str(keyring) if keyring else "/nonexistent.gpg")
    (etc / "sources.list.d/debian.sources").write_text(text)
    return etc


DEB822 = """Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: KEYRING

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: KEYRING

Types: deb
URIs: https://other.invalid/node
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def test_host_sources_are_retargeted_to_the_suite(tmp_path: Path):
    key = tmp_path / "debian-archive-keyring.gpg"
    key.write_bytes(b"k")
    src = resolve_sources("trixie", ("main", "contrib"), None, _etc(tmp_path, DEB822, key))
    assert src.lines == (
        f"deb [signed-by={key}] http://mirror.invalid/debian trixie main contrib",
        f"deb [signed-by={key}] http://mirror.invalid/debian trixie-updates main contrib",
        f"deb [signed-by={key}] http://mirror.invalid/debian-security trixie-security "
        "main contrib",
    )
    assert src.main_uri == "http://mirror.invalid/debian"


def test_missing_keyring_is_an_error_not_an_unchecked_build(tmp_path: Path):
    etc = _etc(tmp_path, DEB822.replace("KEYRING", "/nonexistent/debian-archive.gpg"), None)
    with pytest.raises(RootfsError, match="keyring /nonexistent/debian-archive.gpg is missing"):
        resolve_sources("bookworm", ("main",), None, etc)


def test_no_debian_entry_asks_for_a_mirror_setting(tmp_path: Path):
    etc = tmp_path / "apt"
    etc.mkdir()
    with pytest.raises(RootfsError, match="no Debian archive entry") as exc:
        resolve_sources("bookworm", ("main",), None, etc)
    assert "mirror" in (exc.value.hint or "")


def test_mirror_setting_gets_the_debian_keyring(monkeypatch, tmp_path: Path):
    import virtmix.rootfs.sources as sources

    key = tmp_path / "k.gpg"
    key.write_bytes(b"k")
    monkeypatch.setattr(sources, "DEBIAN_KEYRING", str(key))
    src = resolve_sources("bookworm", ("main",), "http://mirror.invalid/debian")
    assert src.lines == (f"deb [signed-by={key}] http://mirror.invalid/debian bookworm main",)
    monkeypatch.setattr(sources, "DEBIAN_KEYRING", str(tmp_path / "missing.gpg"))
    with pytest.raises(RootfsError, match="missing"):
        resolve_sources("bookworm", ("main",), "http://mirror.invalid/debian")
    with pytest.raises(RootfsError, match="expected a URI"):
        resolve_sources("bookworm", ("main",), "mirror.invalid")
