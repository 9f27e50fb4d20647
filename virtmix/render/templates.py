"""Jinja2 rendering of domain and network XML from views; a strict, escaping environment."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.sandbox
import markupsafe
from jinja2.sandbox import ImmutableSandboxedEnvironment

from virtmix.errors import TemplateError, UsageError
from virtmix.inventory.site import Entry, Site
from virtmix.render.views import (
    DiskView,
    DomainView,
    ExecuteView,
    InterfaceView,
    NetworkView,
    domain_view,
    network_view,
    warm_site_caches,
)
from virtmix.util import paths
from virtmix.util.gcpause import gc_paused

TEMPLATE_FOR_KIND = {"container": "lxc.xml.j2", "guest": "kvm.xml.j2"}
VIEW_TYPES = frozenset({DomainView, InterfaceView, DiskView, NetworkView})
# The data fields of each view (none starts with '_'): what the sandbox lets through unchecked.
VIEW_FIELDS = {cls: frozenset(f.name for f in dataclasses.fields(cls)
                              if not f.name.startswith("_")) for cls in VIEW_TYPES}


try:  # markupsafe's C escaper, str -> str (the same characters as markupsafe.escape)
    from markupsafe import _escape_inner
except ImportError:  # pragma: no cover - markupsafe without speedups or a renamed helper
    _escape_inner = None


def _escape_output(value: object) -> object:
    """What every `{{ ... }}` of an autoescaping template passes its value through: the
    characters markupsafe.escape replaces are replaced, but a plain string comes back as a
    plain string instead of a new Markup object (the output is joined into one string anyway).
    Markup (`|safe`) and other values take markupsafe.escape's own path. Wrapping each of ~30
    values per domain in Markup was a third of rendering."""
    if type(value) is str:
        return _escape_inner(value)
    if type(value) is int:  # digits and a sign need no escaping
        return str(value)
    return markupsafe.escape(value)


class FastEscapeTemplate(jinja2.Template):
    """A template whose output escaping is _escape_output (jinja2 resolves `escape` in the
    compiled module's namespace at call time), and whose render copies its globals once.

    jinja2's render copies the template's globals (a ChainMap over the environment's) into a
    new dict twice per call, iterating the ChainMap each time: 6% of rendering a domain.
    virtmix never changes an environment's globals after making it, so one plain copy per
    template gives every render the same context jinja2 would build."""

    @classmethod
    def _from_namespace(cls, environment, namespace, globals):
        if _escape_inner is not None:
            namespace["escape"] = _escape_output
        return super()._from_namespace(environment, namespace, globals)

    def render(self, *args, **kwargs):
        if self.environment.is_async:
            return super().render(*args, **kwargs)
        plain = self.__dict__.get("_plain_globals")
        if plain is None:
            plain = self._plain_globals = dict(self.globals)
        # = new_context(vars): parent = dict(globals, **vars), globals_keys = set(globals)
        ctx = self.environment.context_class(self.environment, {**plain, **dict(*args, **kwargs)},
                                             self.name, self.blocks, globals=plain)
        try:
            return self.environment.concat(self.root_render_func(ctx))
        except Exception:
            self.environment.handle_exception()


class ConfinedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that reads only files inside its directories: a symlink in a user
    template directory that points elsewhere (`x.j2 -> /etc/shadow`) is not followed out.
    jinja2 already refuses `..` and reads absolute names relative to the search path."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        roots = [os.path.realpath(d) for d in self.searchpath]
        if not any(real.startswith(root + os.sep) for root in roots):
            raise jinja2.TemplateNotFound(f"{template} (it leads out of the template "
                                          "directories)")
        return source, filename, uptodate


class InliningLoader(ConfinedLoader):
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


class UserTemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded: `{{ 'x' * 10**12 }}` would otherwise ask for
    a terabyte before anything could stop it."""

    intercepted_binops = frozenset({"*", "**"})
    MAX_ITEMS = 1_000_000

    def getattr(self, obj, attribute):
        # Fast path for the data fields of the views (plain dataclasses of data, made per
        # render): for them the sandbox's own checks (internal attributes of functions,
        # frames, types; methods that mutate lists and dicts) can only say yes, and asking
        # costs 4x the render. Everything else goes through the full checks.
        if attribute in VIEW_FIELDS.get(type(obj), ()):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise jinja2.sandbox.SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int) and \
                        len(seq) * n > self.MAX_ITEMS:
                    raise jinja2.sandbox.SecurityError("repetition too large in a template")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=8)
def environment(user_dir: str | None = None, inline: bool = True) -> jinja2.Environment:
    """A strict environment: undefined names fail, every value is XML-escaped.

    `select_autoescape()` would not escape files named *.xml.j2, so autoescape is forced on.
    A user template directory comes first, so its files override the shipped ones.

    With a user directory the environment is jinja2's ImmutableSandboxedEnvironment: those
    templates come with the inventory, which is untrusted until apply (SECURITY.md), and the
    sandbox keeps them from Python internals (`__class__`, `__globals__`, ...), from calling
    anything unsafe and from changing the views. The shipped templates alone are part of
    virtmix and stay on the faster plain environment (DESIGN.md). The sandbox compiles
    differently (intercepted operators), so its bytecode is cached under its own keys.
    """
    search = [user_dir] if user_dir else []
    search.append(str(paths.templates_dir()))
    env_class = UserTemplateEnvironment if user_dir else jinja2.Environment
    env = env_class(
        loader=(InliningLoader if inline else ConfinedLoader)(search),
        bytecode_cache=_bytecode_cache() if inline else None,
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # no mtime check per get_template/include: 11k renders per run
    )
    env.template_class = FastEscapeTemplate
    return env


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
    return _BytecodeCache(directory)


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Keys that tell sandboxed from plain compilations of one template file apart."""

    def get_bucket(self, environment, name, filename, source):
        if environment.sandboxed:
            name = f"sandboxed:{name}"
        return super().get_bucket(environment, name, filename, source)


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


TEMPLATE_SECONDS = 2.0  # what one document of a user template may take to render


class _TemplateTimeout(Exception):
    pass


# The deadline of user templates: one repeating timer for a whole batch of documents, and the
# start of the document being rendered. Setting and clearing a timer per document was two
# system calls per domain; the handler only compares clocks four times a second.
CLOCK_TICK = 0.25
_clock_running = False
_doc_started = 0.0  # monotonic start of the sandboxed document being rendered, 0 between them


def _expired(_signum, _frame):
    if _doc_started and time.monotonic() - _doc_started >= TEMPLATE_SECONDS:
        raise _TemplateTimeout


def _timer_ready() -> bool:
    """Whether a timer signal can interrupt a user template here: only in the main thread
    (forked render workers run their slices there too; apply's threads get no deadline).
    The handler stays installed: virtmix uses SIGALRM for nothing else, and installing it
    per document cost 14% of sandboxed rendering."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) is not _expired:
        signal.signal(signal.SIGALRM, _expired)
    return True


@contextmanager
def _deadline_clock(env: jinja2.Environment) -> Iterator[None]:
    """Run the repeating deadline timer around a batch of renders with a user template
    (nothing for the shipped templates, in threads, or inside a batch already)."""
    global _clock_running
    if _clock_running or not env.sandboxed or not _timer_ready():
        yield
        return
    _clock_running = True
    signal.setitimer(signal.ITIMER_REAL, CLOCK_TICK, CLOCK_TICK)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _clock_running = False


def _timed_render(env: jinja2.Environment, name: str, context: dict) -> str:
    """Render under the running deadline clock: the handler raises once this document has
    taken TEMPLATE_SECONDS."""
    global _doc_started
    _doc_started = time.monotonic()
    try:
        return env.get_template(name).render(**context)
    finally:
        _doc_started = 0.0


def _render(env: jinja2.Environment, name: str, **context: object) -> str:
    try:
        if env.sandboxed and threading.current_thread() is threading.main_thread():
            # Interrupt a user template that loops for too long: nested loops over the
            # sandbox's 100,000-item ranges never end in practice.
            if _clock_running:  # a batch (_render_jobs) runs the clock
                return _timed_render(env, name, context)
            with _deadline_clock(env):
                return _timed_render(env, name, context)
        return env.get_template(name).render(**context)
    except _TemplateTimeout:
        raise TemplateError(f"template {name}: rendering one document took more than "
                            f"{TEMPLATE_SECONDS:g} s (a loop that does not end?)") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found in {env.loader.searchpath}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(env, name, exc) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # SecurityError (sandbox) and other template faults
        raise TemplateError(f"template {name}: {exc.message or type(exc).__name__}") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError,
            RecursionError, MemoryError) as exc:
        # What a user template's own expression raises ({{ 1/0 }}, {{ 'a' * 10**12 }}).
        raise TemplateError(f"template {name}: {type(exc).__name__}: {exc}") from None


def render_domain(site: Site, entry: Entry, env: jinja2.Environment | None = None) -> str:
    """The domain XML of one inventory entry."""
    env = env or environment(user_templates(site))
    return _render(env, TEMPLATE_FOR_KIND[entry.kind], d=domain_view(site, entry))


def render_execute(view: ExecuteView) -> str:
    """The transient domain of `virtmix execute` (shipped template, no inventory)."""
    return _render(environment(), "execute.xml.j2", x=view)


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
               check: bool = False, workers: int | None = None,
               keep: bool = True) -> list[Rendered]:
    """Render the selected networks and domains, in inventory order.

    With `check`, every document is also validated against libvirt's RelaxNG schema. Large
    selections are split over worker processes (one per CPU): rendering and schema checks are
    CPU-bound and independent per document. With `keep=False` (validate) the documents are
    rendered and checked but not kept: each Rendered has an empty `xml`, and workers send
    nothing back (the XML of 85,000 containers is ~110 MB to pickle and copy).
    """
    jobs = _jobs(site, host, name)
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(jobs) >= PARALLEL_THRESHOLD else 1
    with gc_paused():  # the views and strings made here are freed by reference counting
        xmls = _render_parallel(site, jobs, check, workers, keep) if workers > 1 else \
            _render_jobs(site, jobs, check, keep)
    if not keep:
        return [Rendered(kind, address, h, "") for kind, address, h, _ in jobs]
    return [Rendered(kind, address, h, xml) for (kind, address, h, _), xml in zip(jobs, xmls,
                                                                                 strict=True)]


PARALLEL_THRESHOLD = 2000  # below this, starting workers costs more than it saves


def _jobs(site: Site, host: str | None = None,
          name: str | None = None) -> list[tuple[str, str, str, Entry | None]]:
    """(kind, address, host, entry or None for a network) of each document, in order."""
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
    return jobs


def _render_jobs(site: Site, jobs: list, check: bool, keep: bool = True,
                 checker=None) -> list[str]:
    """The documents of `jobs` in order (none when not `keep`); the first failure raises.
    `checker`: a ShapeChecker to share between batches of one process."""
    from virtmix.render.schema_check import ShapeChecker

    env = environment(user_templates(site))
    if checker is None:  # same-shape documents are schema-checked once (schema_check.py)
        checker = ShapeChecker()
    out = []
    with _deadline_clock(env):  # one timer for the batch (user templates only)
        for kind, address, _host, entry in jobs:
            if entry is None:
                xml = render_network(site, address, env)
            else:
                xml = render_domain(site, entry, env)
            if check:
                checker.check(xml, "network" if kind == "network" else "domain",
                              f"{kind} {address}")
            if keep:
                out.append(xml)
    return out


_FORKED: tuple[Site, list, bool, bool] | None = None  # what forked workers inherit


def _render_slice(bounds: tuple[int, int]) -> list[str]:
    assert _FORKED is not None
    site, jobs, check, keep = _FORKED
    return _render_jobs(site, jobs[bounds[0]:bounds[1]], check, keep)


def _render_parallel(site: Site, jobs: list, check: bool, workers: int,
                     keep: bool = True) -> list[str]:
    """Render slices in forked workers; they inherit the loaded site instead of pickling it."""
    global _FORKED
    warm_site_caches(site)  # once here, not once per worker
    _FORKED = (site, jobs, check, keep)
    # Many small slices, so that the workers finish together (with 8 the last one alone
    # could take a third of a second of the wall time).
    step = -(-len(jobs) // (workers * 16))
    bounds = [(i, min(i + step, len(jobs))) for i in range(0, len(jobs), step)]
    try:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            return [xml for part in pool.map(_render_slice, bounds) for xml in part]
    finally:
        _FORKED = None


class EarlyRender:
    """validate's rendering and schema checks, started while the inventory is still being
    checked.

    load_site calls `start` (its on_entries hook) once the entries exist; the site-wide
    checks and warnings that follow only read the site, and take ~1 s on 85,000 containers
    with one CPU idle. `start` forks workers there (one per CPU but the first: the parent
    joins them in `finish`), which take slices of the documents from a pipe of tickets (one
    byte each: a read of one byte from a pipe is atomic, so every slice is taken once) and
    report each slice as passed or failed on another pipe.

    `finish` runs in the parent after the load succeeded and the warnings were printed: it
    takes the tickets left, then walks the slices in order and renders again, itself, every
    slice that was not reported passed (failed, or left by a worker that died), so the first
    failing document raises exactly what render_all would have raised. Rendering is
    deterministic; only a passed slice is trusted. If the load fails, `abort` kills and
    reaps the workers: nothing they did is used. Only a validate of the whole inventory
    with every entry placed (site.unplaced empty: the provisional site is the site) and
    enough documents to be worth forking starts early; otherwise `finish` returns None and
    the caller renders as before.
    """

    def __init__(self, check: bool = True) -> None:
        self.check = check
        self.site: Site | None = None
        self.jobs: list = []
        self.step = 0
        self.slices = 0
        self.pids: list[int] = []
        self.tickets = -1  # read end of the tickets pipe
        self.reports = -1  # read end of the reports pipe

    def start(self, site: Site) -> None:
        if self.site is not None or site.unplaced:
            return
        workers = min(os.cpu_count() or 1, 4)
        if workers < 2 or threading.active_count() > 1:
            return
        jobs = _jobs(site)
        if len(jobs) < PARALLEL_THRESHOLD:
            return
        # No warm_site_caches here: each process computes the site's id ranges when it
        # renders its first container (~0.2 s), the parent while the workers already render,
        # rather than all of them waiting for it before the fork.
        slices = min(255, workers * 16)
        step = -(-len(jobs) // slices)
        slices = -(-len(jobs) // step)
        try:
            tickets_r, tickets_w = os.pipe()
        except OSError:
            return  # no pipe (out of file descriptors): validate renders as before
        try:
            reports_r, reports_w = os.pipe()
        except OSError:
            os.close(tickets_r)
            os.close(tickets_w)
            return
        os.write(tickets_w, bytes(range(slices)))  # < 256 bytes: never blocks
        os.close(tickets_w)
        self.site, self.jobs, self.step, self.slices = site, jobs, step, slices
        self.tickets, self.reports = tickets_r, reports_r
        for _ in range(workers - 1):
            try:
                pid = os.fork()
            except OSError:
                break  # fewer workers: the parent takes more tickets
            if pid == 0:  # the worker: report slices, never return into the caller
                code = 1
                try:
                    os.close(reports_r)
                    for i, ok in self._take_tickets():
                        os.write(reports_w, bytes((i, ok)))
                    code = 0
                finally:
                    os._exit(code)
            self.pids.append(pid)
        os.close(reports_w)

    def _slice(self, i: int) -> list:
        return self.jobs[i * self.step:(i + 1) * self.step]

    def _take_tickets(self) -> Iterator[tuple[int, bool]]:
        """Render the slices of the tickets this process takes; stop at a failed one."""
        from virtmix.render.schema_check import ShapeChecker

        checker = ShapeChecker()  # one per process: its shapes serve every slice it takes
        while True:
            ticket = os.read(self.tickets, 1)
            if not ticket:
                return
            try:
                _render_jobs(self.site, self._slice(ticket[0]), self.check, keep=False,
                             checker=checker)
            except Exception:  # noqa: BLE001 - the parent renders it again and reports it
                yield ticket[0], False
                return
            yield ticket[0], True

    def finish(self, site: Site) -> list[Rendered] | None:
        """The Rendered list render_all(site, check=..., keep=False) would return, or None
        when nothing was started (or for another site)."""
        if self.site is None:
            return None
        if site is not self.site:
            self.abort()
            return None
        passed = set()
        with gc_paused():
            for i, ok in self._take_tickets():
                if ok:
                    passed.add(i)
            reports = self._collect()
            passed.update(i for i, ok in zip(reports[::2], reports[1::2], strict=True) if ok)
            for i in range(self.slices):
                if i not in passed:  # failed, or its worker died: render it here
                    _render_jobs(site, self._slice(i), self.check, keep=False)
        return [Rendered(kind, address, h, "") for kind, address, h, _ in self.jobs]

    def _collect(self) -> bytes:
        """Every report, once every worker has exited."""
        data = b""
        while chunk := os.read(self.reports, 4096):  # EOF: all workers closed their end
            data += chunk
        self._reap()
        return data

    def _reap(self) -> None:
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.pids = []
        for fd in (self.tickets, self.reports):
            if fd >= 0:
                os.close(fd)
        self.tickets = self.reports = -1

    def abort(self) -> None:
        """Stop and reap the workers (the load failed, or Ctrl-C)."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self.site = None


def write_rendered(items: list[Rendered], out_dir: Path) -> list[Path]:
    """Write one NAME.xml per document (networks as network-NAME.xml, nested as GUEST--NAME).

    A name used on several hosts goes into a HOST/ subdirectory so no file overwrites another.
    Only inside `out_dir` and never through a symlink (SECURITY.md): every directory below it
    is opened with O_NOFOLLOW, and each file is written to a new temporary name and renamed
    into place, which replaces a planted symlink instead of writing where it points.
    """
    counts = Counter(i.file_name for i in items)
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        base = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UsageError(f"render --out {out_dir}: {exc.strerror}") from None
    try:
        for item in items:
            sub = item.host if counts[item.file_name] > 1 else None
            try:
                _write_below(base, sub, item.file_name, item.xml)
            except OSError as exc:
                raise UsageError(f"render --out {out_dir}: cannot write {item.file_name}: "
                                 f"{exc.strerror}") from None
            written.append(out_dir / sub / item.file_name if sub else out_dir / item.file_name)
    finally:
        os.close(base)
    return written


def _write_below(base: int, sub: str | None, name: str, text: str) -> None:
    for part in (sub, name):
        if part is not None and (part in ("", ".", "..") or "/" in part or "\0" in part):
            raise UsageError(f"render --out: refusing file name {part!r}")
    folder = base
    if sub is not None:
        try:
            os.mkdir(sub, 0o755, dir_fd=base)
        except FileExistsError:
            pass
        try:
            folder = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=base)
        except OSError as exc:
            raise UsageError(f"render --out: {sub} is not a plain directory (a symlink?): "
                             f"{exc.strerror}") from None
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                     dir_fd=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        try:
            os.unlink(tmp, dir_fd=folder)
        except FileNotFoundError:
            pass
        if folder != base:
            os.close(folder)
