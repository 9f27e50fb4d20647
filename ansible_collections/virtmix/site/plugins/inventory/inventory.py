# Copyright: virtmix contributors; Apache-2.0
"""Ansible inventory plugin: a virtmix inventory file read directly, as `inventory ansible`."""

from __future__ import annotations

DOCUMENTATION = r"""
name: inventory
short_description: Hosts, guests and containers of a virtmix inventory
description:
  - Reads a virtmix inventory (site.yaml) and gives every host, guest and container of it,
    with the connection settings of C(virtmix inventory ansible) (containers through
    C(virtmix.site.lxc), guests on virtmix's images and on cloud images with a static
    address over ssh with the host key virtmix pinned).
  - "Groups: virtmix_hosts, virtmix_guests, virtmix_containers; host_HOST (what runs on a
    host), guest_GUEST (containers nested in a guest), kind_container, kind_guest,
    profile_PROFILE (every profile in an entry's chain)."
  - Each entry's merged settings are the host variable C(virtmix_settings); the inventory's
    own C(settings:) are the group variable C(virtmix_site_settings) of C(all).
  - "Ansible's C(constructed) options work on top: C(compose), C(groups), C(keyed_groups)
    (for example a group per state with key C(virtmix_settings.state), prefix C(state))."
  - Needs C(virtmix) importable by Ansible's Python.
author: virtmix contributors
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [virtmix.site.inventory]
  inventory:
    description: The virtmix inventory file; a relative path is taken from this file's
      directory (not the current one), so the pair can move together.
    required: true
    type: str
"""

EXAMPLES = r"""
# site.virtmix.yml
plugin: virtmix.site.inventory
inventory: site.yaml
# optional, as for any constructed inventory:
keyed_groups:
  - key: virtmix_settings.state
    prefix: state
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "virtmix.site.inventory"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".yml", ".yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        site_file = os.path.join(os.path.dirname(os.path.abspath(path)),
                                 os.path.expanduser(self.get_option("inventory")))
        try:
            from virtmix.errors import VirtmixError
            from virtmix.handoff.ansible import ansible_inventory
            from virtmix.inventory.load import load_site
        except ImportError as exc:
            raise AnsibleParserError("virtmix.site.inventory needs virtmix importable by "
                                     f"Ansible's Python: {exc}") from None
        try:
            data = ansible_inventory(load_site(site_file))["all"]
        except VirtmixError as exc:
            raise AnsibleParserError(f"{path}: {exc}") from None
        for key, value in data["vars"].items():
            self.inventory.set_variable("all", key, value)
        mine = {}  # this source's hosts only (other sources may share the inventory)
        for group, members in data["children"].items():
            self.inventory.add_group(group)
            for host, hvars in members["hosts"].items():
                self.inventory.add_host(host, group=group)
                mine[host] = None
                for key, value in (hvars or {}).items():
                    self.inventory.set_variable(host, key, value)
        strict = self.get_option("strict")
        for host in mine:
            hvars = {**data["vars"], **self.inventory.get_host(host).get_vars()}
            self._set_composite_vars(self.get_option("compose"), hvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hvars, host,
                                              strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hvars, host,
                                           strict=strict)
