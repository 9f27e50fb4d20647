"""Export a site as an Ansible inventory: hosts, guests, containers, with connection vars.

The result is the structure of Ansible's YAML inventory format (`all: children: ...`),
written as YAML or JSON (the yaml inventory plugin reads both). Containers get the
virtmix.site.lxc connection shipped in ansible_collections/virtmix/site, which enters them
as `virtmix attach` does (community.libvirt.libvirt_lxc misses the user namespace: in an
unprivileged container its commands run as uid 65534); a nested container is reached
through its guest. Guests whose host key virtmix made and pinned (built images) get ssh
with virtmix's key and known_hosts, other guests community.libvirt.libvirt_qemu (which needs
the QEMU guest agent in the guest).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from virtmix.inventory.site import Entry, Site

LXC_PLUGIN = "virtmix.site.lxc"
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
    # The entry's merged settings (profiles applied), as the inventory has them.
    out["virtmix_settings"] = spec.model_dump(
        mode="json", exclude_none=True, exclude={"containers"} if e.kind == "guest" else None)
    return out


def _ssh_config(site: Site) -> str:
    return f"{site.inventory.settings.storage_dir}/ssh/config"


def _container_vars(site: Site, e: Entry) -> dict[str, Any]:
    # Pipelining: modules go over the command's stdin, no temporary files to copy first.
    out = {"ansible_connection": LXC_PLUGIN, "ansible_host": e.name, "ansible_pipelining": True,
           "ansible_python_interpreter": "auto_silent", **_common_vars(e)}
    if e.parent:
        from virtmix.images.guest import guest_address

        # Its namespaces are in the guest: the plugin goes there over ssh, with virtmix's
        # key and the host key virtmix pinned (no ssh setup of the admin's own).
        guest = next(g for g in site.entries
                     if g.kind == "guest" and g.name == e.parent and g.host == e.host)
        out["virtmix_lxc_guest"] = guest_address(guest)
        out["virtmix_lxc_ssh_config"] = _ssh_config(site)
    return out


def has_pinned_key(e: Entry) -> bool:
    """A guest whose ssh host key virtmix made and pinned: on an image virtmix builds, or on
    a given (cloud) image that receives the key through cloud-init's seed."""
    from virtmix.converge.prepare import seed_pins_host_key

    spec = e.spec
    return seed_pins_host_key(e) or spec.boot is None and (
        spec.image is not None or bool(spec.containers)) and (
        spec.image is None or not spec.image.given)


def _guest_vars(site: Site, e: Entry) -> dict[str, Any]:
    out = _common_vars(e)
    if has_pinned_key(e):
        from virtmix.images.guest import guest_address

        storage = site.inventory.settings.storage_dir
        # virtmix's ssh config, and its pins spelled out beside it: the only key trusted
        # for the address is the host key virtmix made (never learnt on first use), with
        # checking forced on even where an ansible.cfg turns host_key_checking off.
        out.update({
            "ansible_connection": "ssh", "ansible_host": guest_address(e),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": f"{storage}/ssh/id_ed25519",
            "ansible_ssh_common_args": (
                f"-F {_ssh_config(site)} -o UserKnownHostsFile={storage}/ssh/known_hosts "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"),
            "ansible_host_key_checking": True, "ansible_pipelining": True,
            "ansible_python_interpreter": "auto_silent",
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
            containers[name] = _container_vars(site, e)
            place = f"guest_{_group(e.parent)}" if e.parent else f"host_{_group(e.host)}"
        per_place.setdefault(place, {})[name] = {}
        if e.parent:  # what runs on a host includes what runs in its guests
            per_place.setdefault(f"host_{_group(e.host)}", {})[name] = {}
        per_place.setdefault(f"kind_{e.kind}", {})[name] = {}
        for profile in e.profiles:
            per_place.setdefault(f"profile_{_group(profile)}", {})[name] = {}
    children: dict[str, Any] = {
        "virtmix_hosts": {"hosts": hosts},
        "virtmix_guests": {"hosts": guests},
        "virtmix_containers": {"hosts": containers},
    }
    for place, members in sorted(per_place.items()):
        children[place] = {"hosts": members}
    settings = site.inventory.settings.model_dump(mode="json", exclude_none=True)
    return {"all": {"vars": {"virtmix_site": site.name, "virtmix_inventory": str(site.path),
                             "virtmix_site_settings": settings},
                    "children": children}}


def render(site: Site, fmt: str = "yaml") -> str:
    data = ansible_inventory(site)
    if fmt == "json":
        import json

        return json.dumps(data, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
