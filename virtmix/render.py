"""Jinja2 rendering of domain and network XML from views; a strict, escaping environment."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from . import paths
from .errors import TemplateError
from .site import Entry, Site
from .views import domain_view, network_view

TEMPLATE_FOR_KIND = {"container": "lxc.xml.j2", "guest": "kvm.xml.j2"}


@lru_cache(maxsize=8)
def environment(user_dir: str | None = None) -> jinja2.Environment:
    """A strict environment: undefined names fail, every value is XML-escaped.

    `select_autoescape()` would not escape files named *.xml.j2, so autoescape is forced on.
    A user template directory comes first, so its files override the shipped ones.
    """
    search = [user_dir] if user_dir else []
    search.append(str(paths.templates_dir()))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def user_templates(site: Site) -> str | None:
    tdir = site.inventory.templates_dir
    if not tdir:
        return None
    path = (site.path.parent / tdir).resolve()
    if not path.is_dir():
        raise TemplateError(f"{site.path}: templates_dir: {path} is not a directory")
    return str(path)


def _render(env: jinja2.Environment, name: str, **context: object) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found in {env.loader.searchpath}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename}:{exc.lineno}: template syntax error: "
                            f"{exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name}: {exc.message}") from None


def render_domain(site: Site, entry: Entry, env: jinja2.Environment | None = None) -> str:
    """The domain XML of one inventory entry."""
    env = env or environment(user_templates(site))
    return _render(env, TEMPLATE_FOR_KIND[entry.kind], d=domain_view(site, entry))


def render_network(site: Site, name: str, env: jinja2.Environment | None = None) -> str:
    env = env or environment(user_templates(site))
    return _render(env, "network.xml.j2", n=network_view(site, name, site.networks[name]))


@dataclass(frozen=True)
class Rendered:
    """One rendered document: a domain ("container"/"guest") or a "network"."""

    kind: str
    address: str  # NAME, GUEST/NAME for nested containers, or the network name
    host: str     # the inventory host (for networks: the host or guest they live on)
    xml: str

    @property
    def file_name(self) -> str:
        stem = self.address.replace("/", "--")
        return f"network-{stem}.xml" if self.kind == "network" else f"{stem}.xml"


def render_all(site: Site, *, host: str | None = None, name: str | None = None
               ) -> list[Rendered]:
    """Render the selected networks and domains, in inventory order."""
    env = environment(user_templates(site))
    out: list[Rendered] = []
    if name is None:
        for nname, net in site.networks.items():
            if host is None or net.host == host:
                out.append(Rendered("network", nname, net.host,
                                    render_network(site, nname, env)))
    for e in site.entries:
        if host is not None and e.host != host:
            continue
        if name is not None and name not in (e.name, e.address):
            continue
        out.append(Rendered(e.kind, e.address, e.host, render_domain(site, e, env)))
    return out


def write_rendered(items: list[Rendered], out_dir: Path) -> list[Path]:
    """Write one NAME.xml per document (networks as network-NAME.xml, nested as GUEST--NAME).

    A name used on several hosts goes into a HOST/ subdirectory so no file overwrites another.
    """
    counts = Counter(i.file_name for i in items)
    written = []
    for item in items:
        folder = out_dir / item.host if counts[item.file_name] > 1 else out_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / item.file_name
        path.write_text(item.xml, encoding="utf-8")
        written.append(path)
    return written
