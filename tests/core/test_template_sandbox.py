"""User templates (templates_dir) come with the untrusted inventory: they render in jinja2's
sandbox, cannot reach Python objects, the OS or files, and fail with exit 4 (SECURITY.md).
`render --out` writes only inside its directory and never through a symlink."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.errors import TemplateError
from virtmix.render.templates import environment

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
SECRET = "virtmix-sandbox-secret-3f9a"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An inventory with a user template dir (a copy of the shipped one) and a secret file
    the templates try to read."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    environment.cache_clear()
    shutil.copytree(REPO / "domain_templates", tmp_path / "tpl")
    (tmp_path / "secret.txt").write_text(SECRET)
    inv = tmp_path / "s.yaml"
    inv.write_text("templates_dir: tpl\nhosts:\n  h:\n    containers:\n"
                   "      c: {rootfs: {path: /srv/x}}\n")
    yield inv
    environment.cache_clear()


def _with_payload(inv: Path, payload: str) -> None:
    tpl = inv.parent / "tpl" / "lxc.xml.j2"
    text = tpl.read_text()
    tpl.write_text(text.replace("<clock offset='utc'/>", f"<clock offset='utc'/>{payload}", 1))


PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__['os'].system('touch /tmp/virtmix-pwned') }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ self.__init__.__globals__ }}",
    "{{ d.__class__.__init__.__globals__['sys'].modules['os'].system('id') }}",
    "{{ d.__dict__ }}",
    "{{ config.__class__.__init__.__globals__ }}",
    "{{ request.application.__globals__ }}",
    "{% set x = d.__class__ %}{{ x.__base__.__subclasses__() }}",
    "{{ (d|attr('__class__')) }}",
    "{{ d|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ 'a'.format.__globals__ }}",
    "{{ '{0.__class__}'.format(d) }}",
    "{{ ''|format.__globals__ }}",
    "{% include '/etc/passwd' %}",
    "{% include '../secret.txt' %}",
    "{% include 'secret-link' %}",
    "{% import 'os' as os %}",
    "{{ 'x' * 1000000000000 }}",
    "{{ 2 ** 100000000 }}",
    "{{ range(100000000)|list }}",
    "{{ d.name.__class__.__subclasses__() }}",
    "{% for i in d.__class__.__mro__ %}{{ i }}{% endfor %}",
    "{{ undefined_name.__class__ }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_injection_is_a_template_error(site, payload, tmp_path):
    (site.parent / "tpl" / "secret-link").symlink_to(site.parent / "secret.txt")
    _with_payload(site, payload)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(site), "--out", str(out)])
    assert result.exit_code == 4, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("virtmix: error: ")
    assert SECRET not in result.stdout + result.stderr
    assert "root:" not in result.stdout + result.stderr
    assert not out.exists()
    assert not Path("/tmp/virtmix-pwned").exists()


def test_harmless_user_template_still_renders(site):
    _with_payload(site, "<!-- {{ d.name|upper }} {{ (3 * 4) }} {{ 'ab' * 2 }} -->")
    result = runner.invoke(app, ["render", str(site)])
    assert result.exit_code == 0, result.stderr
    assert "<!-- C 12 abab -->" in result.stdout


def test_only_user_templates_are_sandboxed(tmp_path):
    from jinja2.sandbox import SandboxedEnvironment

    environment.cache_clear()
    assert not isinstance(environment(None), SandboxedEnvironment)
    assert isinstance(environment(str(tmp_path)), SandboxedEnvironment)
    environment.cache_clear()


# -- render --out --------------------------------------------------------------------------
INV = "hosts:\n  h:\n    containers:\n      c: {rootfs: {path: /srv/x}}\n"


def test_render_out_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text(INV)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / "c.xml").symlink_to(victim)
    before = set(os.listdir(tmp_path))
    result = runner.invoke(app, ["render", str(inv), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert victim.read_text() == "precious\n"
    assert not (out / "c.xml").is_symlink()
    assert "<domain type='lxc'>" in (out / "c.xml").read_text()
    assert set(os.listdir(tmp_path)) == before
    assert sorted(os.listdir(out)) == ["c.xml"]  # no temporary file left


def test_render_out_never_follows_a_symlinked_host_directory(tmp_path):
    """A name on two hosts goes into HOST/ subdirectories: a planted HOST symlink is refused."""
    inv = tmp_path / "s.yaml"
    inv.write_text("hosts:\n  h1:\n    lxc_uri: 'lxc+ssh://root@a/system'\n"
                   "    containers: {c: {rootfs: {path: /srv/x}}}\n"
                   "  h2:\n    lxc_uri: 'lxc+ssh://root@b/system'\n"
                   "    containers: {c: {rootfs: {path: /srv/x}}}\n")
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "h1").symlink_to(elsewhere)
    result = runner.invoke(app, ["render", str(inv), "--out", str(out)])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "h1" in result.stderr and "Traceback" not in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_render_out_writes_both_hosts_files(tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text("hosts:\n  h1:\n    lxc_uri: 'lxc+ssh://root@a/system'\n"
                   "    containers: {c: {rootfs: {path: /srv/x}}}\n"
                   "  h2:\n    lxc_uri: 'lxc+ssh://root@b/system'\n"
                   "    containers: {c: {rootfs: {path: /srv/x}}}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(inv), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert (out / "h1" / "c.xml").is_file() and (out / "h2" / "c.xml").is_file()


# -- output escaping and the per-document deadline ---------------------------------------------
def test_output_escaping_matches_markupsafe():
    """Templates escape through _escape_output (plain strings, no Markup per value): the
    same text as markupsafe.escape for hostile strings, numbers, Markup and other objects."""
    import markupsafe

    from virtmix.render.templates import _escape_output

    values = ["<a href='x'>&amp;\"</a>", "", "plain", "é\u2028<", 0, -12, 10**30, 1.5, True,
              None, markupsafe.Markup("<b>kept</b>"), ["<x>"], {"k": "'"}]
    for value in values:
        assert str(_escape_output(value)) == str(markupsafe.escape(value)), value


def test_hostile_value_is_escaped_in_the_rendered_xml(site):
    site.write_text(site.read_text().replace(
        "c: {rootfs: {path: /srv/x}}",
        "c: {rootfs: {path: /srv/x}, description: '</description><devices x=''1''>&\"'}"))
    result = runner.invoke(app, ["render", str(site)])
    assert result.exit_code == 0, result.stderr
    assert ("<description>&lt;/description&gt;&lt;devices x=&#39;1&#39;&gt;&amp;&#34;"
            "</description>") in result.stdout


def _slow_templates(inv: Path, loops: int) -> None:
    """Templates that run `loops` thousand empty loop turns per document."""
    _with_payload(inv, f"{{% for i in range({loops}) %}}{{% for j in range(1000) %}}"
                       "{% endfor %}{% endfor %}")


def test_deadline_is_per_document_not_per_batch(tmp_path, monkeypatch):
    """One timer runs for a whole batch, but each document gets TEMPLATE_SECONDS of its own:
    eight documents of ~0.45 s each render, a document that never ends is stopped."""
    from virtmix.inventory.load import load_site
    from virtmix.render import templates

    monkeypatch.setattr(templates, "TEMPLATE_SECONDS", 1.5)
    monkeypatch.setattr(templates, "CLOCK_TICK", 0.05)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    environment.cache_clear()
    shutil.copytree(REPO / "domain_templates", tmp_path / "tpl")
    inv = tmp_path / "s.yaml"
    inv.write_text("templates_dir: tpl\nhosts:\n  h:\n    containers:\n" + "".join(
        f"      c{i}: {{rootfs: {{path: /srv/x}}}}\n" for i in range(8)))
    _slow_templates(inv, 20)  # calibrate
    site = load_site(inv)
    templates.render_all(site, name="c0", workers=1)  # compiled
    started = time.monotonic()
    templates.render_all(site, name="c0", workers=1)
    per_loop = (time.monotonic() - started) / 20
    environment.cache_clear()
    loops = max(1, int(0.45 / per_loop))  # ~8 x 0.45 s: past 1.5 s even if calibration is off 2x
    _slow_templates(inv, loops)
    started = time.monotonic()
    docs = templates.render_all(load_site(inv), workers=1)
    took = time.monotonic() - started
    assert len(docs) == 8 and took > 1.5, took
    environment.cache_clear()
    _with_payload(inv, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                       "{% endfor %}")
    started = time.monotonic()
    with pytest.raises(TemplateError, match="took more than 1.5 s"):
        templates.render_all(load_site(inv), workers=1)
    assert time.monotonic() - started < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no timer left running
    environment.cache_clear()
