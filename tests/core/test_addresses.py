"""LXC-host guests without ipv4/lxc_uri get a known address (virtmix.inventory.addresses)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from virtmix.errors import InventoryError
from virtmix.inventory.load import load_site

SITE = """\
networks:
  lan: {{host: hv1, mode: isolated, bridge: vmixbr0, ipv4: 10.77.0.1/24, dhcp: true}}
hosts:
  hv1:
    virt_type: qemu
    guests:
{guests}
"""
GUEST = """\
      {name}:
        interfaces: [{{network: lan{extra}}}]
        containers:
          {name}-c: {{rootfs: {{path: /x}}, init: [/bin/sh]}}
"""


def _site(tmp_path, *guests: tuple[str, str]):
    inv = tmp_path / "site.yaml"
    inv.write_text(SITE.format(guests="".join(GUEST.format(name=n, extra=x) for n, x in guests)))
    return load_site(inv)


def test_a_guest_with_containers_needs_no_other_setting(tmp_path):
    """The issue: a guest with containers: is an LXC host, no other setting is needed."""
    site = _site(tmp_path, ("g1", ""))
    address = site.find("g1").spec.interfaces[0].ipv4
    assert address is not None and address.network.prefixlen == 24
    assert IPv4Address("10.77.0.2") <= address.ip <= IPv4Address("10.77.0.99")
    assert site.find("g1-c").uri == f"lxc+ssh://root@{address.ip}/system"


def test_the_pick_depends_on_the_name_only(tmp_path):
    alone = _site(tmp_path, ("g1", "")).find("g1").spec.interfaces[0].ipv4
    (tmp_path / "b").mkdir()
    with_others = _site(tmp_path / "b", ("a0", ", ipv4: 10.77.0.77/24"), ("zz", ""),
                        ("g1", "")).find("g1").spec.interfaces[0].ipv4
    assert alone == with_others


def test_a_taken_address_asks_for_an_explicit_one(tmp_path):
    picked = _site(tmp_path, ("g1", "")).find("g1").spec.interfaces[0].ipv4
    (tmp_path / "b").mkdir()
    with pytest.raises(InventoryError, match="give this guest an ipv4 of its own") as exc:
        _site(tmp_path / "b", ("a0", f", ipv4: {picked}"), ("g1", ""))
    assert "hosts.hv1.guests.g1.interfaces.0" in str(exc.value)


def test_no_network_with_an_address_is_still_an_error(tmp_path):
    inv = tmp_path / "site.yaml"
    inv.write_text("hosts:\n  hv1:\n    guests:\n      g1:\n        interfaces: [{bridge: br0}]\n"
                   "        containers: {c: {rootfs: {path: /x}}}\n")
    with pytest.raises(InventoryError, match="needs a known address"):
        load_site(inv)
