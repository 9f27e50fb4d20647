"""Jinja2 rendering of domain and network XML from views; a strict, escaping environment."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from virtmix.errors import TemplateError
from virtmix.inventory.site import Entry, Site
from virtmix.render.views import domain_view, network_view
from virtmix.util import paths
from virtmix.util.files import write_atomic
from virtmix.util.gcpause import gc_paused

TEMPLATE_FOR_KIND = {"container": "lxc.xml.j2", "guest": "kvm.xml.j2"}


class InliningLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that pastes each line-alone `{% include 'NAME' %}` into the template
    that includes it, at load time.

    Every include costs a template lookup and a new context per render: with six of them per
    domain that was 30% of rendering 11,000 domains. The partials are found through the same
    search path, so a user's override of a partial still wins; an include with an expression
    or `ignore missing` is left to jinja2. Syntax errors are reported against the real file
    (see _syntax_error).
    """

    INCLUDE = re.compile(r"^[ \t]*\{%\s*include\s+'([^'\s]+)'\s*%\}[ \t]*\n", re.M)

    def get_source(self, environment, template, _seen=()):
        if template in _seen:
            raise jinja2.TemplateSyntaxError(
                f"{template} includes itself (through {' -> '.join(_seen)})", 1, template)
        source, filename, uptodate = super().get_source(environment, template)

        def paste(match: re.Match) -> str:
            part = self.get_source(environment, match.group(1), (*_seen, template))[0]
            return part if part.endswith("\n") else part + "\n"

        return self.INCLUDE.sub(paste, source), filename, uptodate


@lru_cache(maxsize=8)
def environment(user_dir: str | None = None, inline: bool = True) -> jinja2.Environment:
    """A strict environment: undefined names fail, every value is XML-escaped.

    `select_autoescape()` would not escape files named *.xml.j2, so autoescape is forced on.
    A user template directory comes first, so its files override the shipped ones.
    """
    search = [user_dir] if user_dir else []
    search.append(str(paths.templates_dir()))
    return jinja2.Environment(
        loader=(InliningLoader if inline else jinja2.FileSystemLoader)(search),
        bytecode_cache=_bytecode_cache() if inline else None,
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # no mtime check per get_template/include: 11k renders per run
    )


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (~25 ms of every render/plan/apply call), in
    the user's cache directory; keyed by the (inlined) source's checksum, so an edited
    template or partial is compiled again. No cache where that directory cannot be made."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "virtmix", "jinja")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(directory)


def _syntax_error(env: jinja2.Environment, name: str,
                  exc: jinja2.TemplateSyntaxError) -> TemplateError:
    """Where a syntax error really is: inlined partials would shift it into their includer,
    so the template is compiled again without inlining to find the file and line."""
    search = env.loader.searchpath
    plain = environment(search[0] if len(search) > 1 else None, inline=False)
    todo, seen = [name], set()
    while todo:  # the template, then the partials it includes, each compiled on its own
        part = todo.pop(0)
        if part in seen:
            continue
        seen.add(part)
        try:
            plain.get_template(part)
        except jinja2.TemplateSyntaxError as real:
            exc = real
            break
        except jinja2.TemplateNotFound as missing:
            return TemplateError(f"template {missing.name} not found in {search}")
        source = plain.loader.get_source(plain, part)[0]
        todo += InliningLoader.INCLUDE.findall(source)
    return TemplateError(f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: "
                         f"{exc.message}")


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
        raise _syntax_error(env, name, exc) from None
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


def render_all(site: Site, *, host: str | None = None, name: str | None = None,
               check: bool = False, workers: int | None = None) -> list[Rendered]:
    """Render the selected networks and domains, in inventory order.

    With `check`, every document is also validated against libvirt's RelaxNG schema. Large
    selections are split over worker processes (one per CPU): rendering and schema checks are
    CPU-bound and independent per document.
    """
    jobs: list[tuple[str, str, str, Entry | None]] = []
    if name is None:
        for nname, net in site.networks.items():
            if host is None or net.host == host:
                jobs.append(("network", nname, net.host, None))
    for e in site.entries:
        if host is not None and e.host != host:
            continue
        if name is not None and name not in (e.name, e.address):
            continue
        jobs.append((e.kind, e.address, e.host, e))
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(jobs) >= PARALLEL_THRESHOLD else 1
    with gc_paused():  # the views and strings made here are freed by reference counting
        xmls = _render_parallel(site, jobs, check, workers) if workers > 1 else \
            _render_jobs(site, jobs, check)
    return [Rendered(kind, address, h, xml) for (kind, address, h, _), xml in zip(jobs, xmls,
                                                                                 strict=True)]


PARALLEL_THRESHOLD = 2000  # below this, starting workers costs more than it saves


def _render_jobs(site: Site, jobs: list, check: bool) -> list[str]:
    from virtmix.render.schema_check import check_xml

    env = environment(user_templates(site))
    out = []
    for kind, address, _host, entry in jobs:
        if entry is None:
            xml = render_network(site, address, env)
        else:
            xml = render_domain(site, entry, env)
        if check:
            check_xml(xml, "network" if kind == "network" else "domain", f"{kind} {address}")
        out.append(xml)
    return out


_FORKED: tuple[Site, list, bool] | None = None  # what forked workers inherit


def _render_slice(bounds: tuple[int, int]) -> list[str]:
    assert _FORKED is not None
    site, jobs, check = _FORKED
    return _render_jobs(site, jobs[bounds[0]:bounds[1]], check)


def _render_parallel(site: Site, jobs: list, check: bool, workers: int) -> list[str]:
    """Render slices in forked workers; they inherit the loaded site instead of pickling it."""
    global _FORKED
    _FORKED = (site, jobs, check)
    step = -(-len(jobs) // (workers * 4))
    bounds = [(i, min(i + step, len(jobs))) for i in range(0, len(jobs), step)]
    try:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            return [xml for part in pool.map(_render_slice, bounds) for xml in part]
    finally:
        _FORKED = None


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
        write_atomic(path, item.xml.encode("utf-8"))
        written.append(path)
    return written
