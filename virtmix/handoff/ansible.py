"""Export a site as an Ansible inventory: hosts, guests, containers, with connection vars.

The result is the structure of Ansible's YAML inventory format (`all: children: ...`),
written as YAML or JSON (the yaml inventory plugin reads both). Containers get the
community.libvirt.libvirt_lxc connection; guests virtmix reaches over ssh (those that host
containers) get ssh with virtmix's key and pinned known_hosts, other guests
community.libvirt.libvirt_qemu (which needs the QEMU guest agent in the guest).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from virtmix.inventory.site import Entry, Site

LXC_PLUGIN = "community.libvirt.libvirt_lxc"
QEMU_PLUGIN = "community.libvirt.libvirt_qemu"


def _group(name: str) -> str:
    """An Ansible group name: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _common_vars(e: Entry) -> dict[str, Any]:
    spec = e.spec
    out: dict[str, Any] = {"virtmix_kind": e.kind, "virtmix_host": e.host,
                           "virtmix_uri": e.uri, "virtmix_memory_kib": e.memory_kib}
    if e.parent:
        out["virtmix_parent"] = e.parent
    if spec.cpu.cpuset is not None:
        out["virtmix_cpuset"] = spec.cpu.cpuset
    if spec.cpu.shares is not None:
        out["virtmix_shares"] = spec.cpu.shares
    if e.profiles:
        out["virtmix_profile"] = e.profiles[0]
    return out


def _container_vars(e: Entry) -> dict[str, Any]:
    out = {"ansible_connection": LXC_PLUGIN, "ansible_host": e.name,
           # SELinux is not in use on these hosts; virsh needs --noseclabel then.
           "ansible_libvirt_lxc_noseclabel": True, **_common_vars(e)}
    if e.parent:
        # libvirt_lxc enters the container's namespaces on the machine it runs on: for a
        # nested container that is its guest (e.g. delegate the play to the guest).
        out["virtmix_run_on"] = e.parent
    return out


def _guest_vars(site: Site, e: Entry) -> dict[str, Any]:
    out = _common_vars(e)
    if e.spec.containers:
        from virtmix.images.guest import guest_address

        storage = site.inventory.settings.storage_dir
        out.update({
            "ansible_connection": "ssh", "ansible_host": guest_address(e),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": f"{storage}/ssh/id_ed25519",
            "ansible_ssh_common_args": f"-F {storage}/ssh/config",
        })
    else:
        out.update({"ansible_connection": QEMU_PLUGIN, "ansible_host": e.name,
                    "ansible_libvirt_uri": e.uri})
    return out


def _host_vars(uri: str) -> dict[str, Any]:
    host = urlsplit(uri).hostname
    if host:
        user = urlsplit(uri).username
        return {"ansible_host": host, **({"ansible_user": user} if user else {})}
    return {"ansible_connection": "local"}


def ansible_inventory(site: Site) -> dict[str, Any]:
    """The site as {'all': {'vars':..., 'children': {group: {'hosts': {...}}}}}."""
    hosts: dict[str, Any] = {}
    guests: dict[str, Any] = {}
    containers: dict[str, Any] = {}
    per_place: dict[str, dict[str, Any]] = {}
    for hname, host in site.inventory.hosts.items():
        hosts[hname] = {**_host_vars(host.uri), "virtmix_uri": host.uri,
                        "virtmix_lxc_uri": host.lxc_uri, "virtmix_virt_type": host.virt_type}
    counts: dict[str, int] = {}
    for e in site.entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    for e in site.entries:
        # Ansible host names are unique; a name used twice is prefixed with where it lives.
        name = e.name if counts[e.name] == 1 else f"{e.parent or e.host}-{e.name}"
        if e.kind == "guest":
            guests[name] = _guest_vars(site, e)
            place = f"host_{_group(e.host)}"
        else:
            containers[name] = _container_vars(e)
            place = f"guest_{_group(e.parent)}" if e.parent else f"host_{_group(e.host)}"
        per_place.setdefault(place, {})[name] = {}
    children: dict[str, Any] = {
        "virtmix_hosts": {"hosts": hosts},
        "virtmix_guests": {"hosts": guests},
        "virtmix_containers": {"hosts": containers},
    }
    for place, members in sorted(per_place.items()):
        children[place] = {"hosts": members}
    return {"all": {"vars": {"virtmix_site": site.name, "virtmix_inventory": str(site.path)},
                    "children": children}}


def render(site: Site, fmt: str = "yaml") -> str:
    data = ansible_inventory(site)
    if fmt == "json":
        import json

        return json.dumps(data, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
