"""What the inventory asks for, as documents per connection: rendered domains and networks."""

from __future__ import annotations

from typing import Any

from virtmix.converge.documents import DesiredDomain, DesiredNetwork
from virtmix.inventory.site import Entry, Site
from virtmix.render.templates import environment, render_domain, render_network, user_templates
from virtmix.render.views import cgroup_version


def desired_domain(site: Site, entry: Entry, env: Any = None) -> DesiredDomain:
    """One entry's rendered definition, with the cgroup version it runs under."""
    xml = render_domain(site, entry, env)
    return DesiredDomain(entry, xml, cgroup_version(site, entry))


def network_uri(site: Site, name: str) -> str:
    """The connection a network is defined on.

    A network belongs to a host's daemon; virtmix defines it through the host's `uri`,
    except on a host with containers only, where it uses `lxc_uri` (its daemon may have no
    QEMU driver). A network whose host is a guest is defined inside that guest.
    """
    net = site.networks[name]
    host = site.inventory.hosts.get(net.host)
    if host is None:
        uri = _by_guest(site)[0].get(net.host)
        return uri if uri is not None else f"unknown host {net.host}"
    if not host.guests and host.containers:
        return host.lxc_uri
    return host.uri


def network_host(site: Site, name: str) -> str:
    """The inventory host a network is on (a nested network: its guest's host)."""
    net = site.networks[name]
    if net.host in site.inventory.hosts:
        return net.host
    return _by_guest(site)[1].get(net.host, net.host)


def _by_guest(site: Site) -> tuple[dict[str, str], dict[str, str]]:
    """(guest -> URI of its containers' daemon, guest -> its inventory host), made once per
    site and kept on it: a scan of every entry per network made many networks quadratic."""
    index = getattr(site, "_by_guest", None)
    if index is None or index[0] != len(site.entries):
        uris: dict[str, str] = {}
        hosts: dict[str, str] = {}
        for e in site.entries:
            if e.parent is not None:
                uris.setdefault(e.parent, e.uri)
            if e.kind == "guest":
                hosts.setdefault(e.name, e.host)
        index = (len(site.entries), (uris, hosts))
        site._by_guest = index  # type: ignore[attr-defined]
    return index[1]


def desired_documents(site: Site, names: set[str] | None = None
                      ) -> tuple[list[DesiredDomain], list[DesiredNetwork]]:
    """Render every entry (or the named ones) and every network of the site."""
    env = environment(user_templates(site))
    domains = [desired_domain(site, e, env) for e in site.entries
               if names is None or e.name in names or e.address in names]
    networks = [DesiredNetwork(n, net.host, network_uri(site, n), render_network(site, n, env),
                               network_host(site, n), net.host not in site.inventory.hosts)
                for n, net in site.networks.items() if names is None]
    return domains, networks
