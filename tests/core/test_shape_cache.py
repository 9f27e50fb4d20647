"""Schema verdicts cached by shape (virtmix/render/schema_check.py, ShapeChecker).

The cache may skip libxml2 only for a document that differs from one already found valid in
values the checker tests itself. These tests hold it to that: a defect in one value of one of
many same-shape documents is still reported, with check_xml's own message; for documents with
hostile values at every normalised position, the cached verdict equals libxml2's verdict on
each document alone; and the facts about libvirt's schema that the argument rests on are
checked against the installed copy.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from lxml import etree
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.errors import TemplateError
from virtmix.render.schema_check import SCHEMA_DIRS, ShapeChecker, check_xml
from virtmix.util import paths


def _doc(name="c1", uid=None, description="a container", meta_site="s",
         rootfs="/var/lib/virtmix/containers/c1/rootfs", target="100000",
         count="65536", memory="131072", title=None, meta_tail="\n  ",
         mac="52:54:00:12:34:56") -> str:
    """A container document shaped like the shipped lxc.xml.j2's output; values are given
    raw and escaped here, as the template escapes them."""
    uid = uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    title_el = f"  <title>{escape(title)}</title>\n" if title is not None else ""
    return (
        "<domain type='lxc'>\n"
        f"  <name>{escape(name)}</name>\n"
        f"  <uuid>{escape(uid)}</uuid>\n"
        f"{title_el}"
        f"  <description>{escape(description)}</description>\n"
        "  <metadata>\n"
        "    <virtmix:entry xmlns:virtmix='https://virtmix.dev/xmlns/domain/1' "
        f"site={quoteattr(meta_site)} name={quoteattr(name)}/>{escape(meta_tail)}"
        "</metadata>\n"
        f"  <memory unit='KiB'>{memory}</memory>\n"
        "  <vcpu placement='static'>1</vcpu>\n"
        "  <idmap>\n"
        f"    <uid start='0' target={quoteattr(target)} count={quoteattr(count)}/>\n"
        f"    <gid start='0' target={quoteattr(target)} count={quoteattr(count)}/>\n"
        "  </idmap>\n"
        "  <os>\n    <type>exe</type>\n    <init>/sbin/init</init>\n  </os>\n"
        "  <devices>\n"
        "    <filesystem type='mount' accessmode='passthrough'>\n"
        f"      <source dir={quoteattr(rootfs)}/>\n"
        "      <target dir='/'/>\n"
        "    </filesystem>\n"
        "    <interface type='network'>\n"
        f"      <mac address={quoteattr(mac)}/>\n"
        "      <source network='lan0'/>\n"
        "    </interface>\n"
        "    <console type='pty'/>\n"
        "  </devices>\n"
        "</domain>\n")


def _direct(xml: str) -> str | None:
    """check_xml's verdict on one document alone: None, or its message."""
    try:
        check_xml(xml, "domain", "d")
    except TemplateError as exc:
        return str(exc)
    return None


def _cached(checker: ShapeChecker, xml: str) -> str | None:
    try:
        checker.check(xml, "domain", "d")
    except TemplateError as exc:
        return str(exc)
    return None


def test_same_shape_documents_are_checked_by_libxml2_once():
    checker = ShapeChecker()
    for i in range(200):
        checker.check(_doc(name=f"c{i}", description=f"number {i}", meta_site=f"s{i % 3}",
                           rootfs=f"/srv/c{i}/rootfs", target=str(100000 + 65536 * i)),
                      "domain", f"container c{i}")
    assert checker.validated == 1
    checker.check(_doc(memory="262144"), "domain", "other")  # another value elsewhere: checked
    assert checker.validated == 2


BAD_VALUES = {  # one value-only defect per normalised position, each refused by the schema
    "name": "two\nlines",
    "uid": "not-a-uuid",
    "rootfs": "relative/rootfs",
    "target": "4294967296",  # one past unsignedInt
    "count": "-1",
    "title": "a\ntitle",
    "mac": "53:54:00:12:34:56",  # multicast
}


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_a_value_only_defect_among_many_same_shape_documents_is_caught(key):
    extra = {"title": "fine"} if key == "title" else {}
    docs = [_doc(name=f"c{i}", rootfs=f"/srv/c{i}", **extra) for i in range(100)]
    bad = _doc(**{"name": "c50", "rootfs": "/srv/c50", **extra, key: BAD_VALUES[key]})
    docs[50] = bad
    expected = _direct(bad)
    assert expected is not None and "fails libvirt's domain.rng" in expected
    checker = ShapeChecker()
    for i, xml in enumerate(docs):
        if i == 50:
            with pytest.raises(TemplateError) as exc:
                checker.check(xml, "domain", "d")
            assert str(exc.value) == expected  # check_xml's own message, unchanged
        else:
            checker.check(xml, "domain", "d")


def test_a_checker_that_finds_no_shape_twice_validates_directly_and_still_catches():
    checker = ShapeChecker()
    for i in range(ShapeChecker.PROBE + 10):  # each its own shape: memory differs
        checker.check(_doc(memory=str(131072 + i)), "domain", "d")
    assert checker.direct and checker.validated == ShapeChecker.PROBE + 10
    bad = _doc(uid="zz")
    with pytest.raises(TemplateError) as exc:
        checker.check(bad, "domain", "d")
    assert str(exc.value) == _direct(bad)


def test_a_defect_in_a_value_that_is_not_normalised_is_caught():
    checker = ShapeChecker()
    for i in range(20):
        checker.check(_doc(name=f"c{i}"), "domain", "d")
    with pytest.raises(TemplateError, match="fails libvirt's domain.rng"):
        checker.check(_doc(name="c99", memory="lots"), "domain", "d")


# Values that pass or fail the datatypes in interesting ways: empty, whitespace, CR/LF, a
# sign, padding, case, upper bounds, control and non-ASCII characters.
HOSTILE = {
    "name": ["x", "", " ", "a b", "a\rb", "a\nb", "a\tb", "ü", "/", "-", "a" * 300],
    "uid": ["0" * 32, "F" * 32, "g" * 32, "0" * 31, "0" * 33,
            "01234567-89ab-cdef-0123-456789abcdef", "01234567-89ab-cdef-0123-456789abcdeF",
            "01234567-89ab-cdef-0123-456789abcde", " 01234567-89ab-cdef-0123-456789abcdef",
            "0123456789abcdef0123456789abcdef\n"],
    "description": ["", " ", "x\ny", "<&>", "\t"],
    "meta_site": ["", "x", "\n", "<&\"'>"],
    "meta_tail": ["\n  ", "", "x", " \n", "\n  x"],  # text directly in <metadata>: refused
    "rootfs": ["/", "/a", "", "a", "//", "/a\nb", "/a\rb", "/ä", " /a", "C:\\x"],
    "target": ["0", "1", "4294967295", "4294967296", "+1", " 1", "1 ", "01", "-0", "",
               "99999999999", "0x10", "1.0", "٣", "²", "0000000000", "00000000001"],
    "title": ["t", "", "a\nb", "a\rb", " "],
    "mac": ["52:54:00:00:00:00", "52:54:00:AB:cd:EF", "53:54:00:00:00:00", "52-54-00-00-00-00",
            "52:54:00:00:00", "52:54:00:00:00:000", "", "fe:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff",
            " 52:54:00:00:00:00", "g2:54:00:00:00:00"],
}


def test_cached_verdicts_equal_libxml2s_verdict_on_every_document():
    """For each position, documents that differ only there, in one shared checker: each
    cached verdict is the verdict of check_xml on that document alone."""
    for key, values in HOSTILE.items():
        base = {"title": "t"} if key == "title" else {}
        checker = ShapeChecker()
        for value in values:
            xml = _doc(**{**base, key: value})
            assert _cached(checker, xml) == _direct(xml), (key, value)


def test_cached_verdicts_hold_for_values_combined():
    checker = ShapeChecker()
    combos = itertools.product(HOSTILE["name"][:6], HOSTILE["uid"][:6],
                               HOSTILE["rootfs"][:6], HOSTILE["target"][:6])
    for name, uid, rootfs, target in combos:
        xml = _doc(name=name, uid=uid, rootfs=rootfs, target=target)
        assert _cached(checker, xml) == _direct(xml), (name, uid, rootfs, target)


def _rng(name: str) -> etree._Element:
    return etree.parse(str(SCHEMA_DIRS[0] / name)).getroot()


RNG = {"r": "http://relaxng.org/ns/structure/1.0"}


def _define(root: etree._Element, name: str) -> etree._Element:
    found = root.xpath("r:define[@name=$n]", namespaces=RNG, n=name)
    assert len(found) == 1, name
    return found[0]


def _only_ref(el: etree._Element) -> str:
    kids = [k for k in el if isinstance(k.tag, str)]
    assert len(kids) == 1 and kids[0].tag == f"{{{RNG['r']}}}ref", etree.tostring(el)
    return kids[0].get("name")


def _pattern(el: etree._Element) -> list[str]:
    return el.xpath(".//r:param[@name='pattern']/text()", namespaces=RNG)


@pytest.mark.skipif(not (SCHEMA_DIRS[0] / "domaincommon.rng").is_file(),
                    reason="libvirt's schemas are not installed")
def test_the_schema_facts_the_cache_relies_on():
    """What schema_check.py's argument states about libvirt's domain schema, checked on the
    installed copy (a libvirt upgrade that changes one of them fails here first)."""
    common, basic = _rng("domaincommon.rng"), _rng("basictypes.rng")
    elements = {n: common.xpath("//r:element[@name=$n]", namespaces=RNG, n=n)
                for n in ("name", "uuid", "title", "description", "idmap", "filesystem")}
    # name and uuid are defined once, in `ids`, as the given types
    ids = _define(common, "ids")
    (name_el,) = elements["name"]
    assert name_el.xpath("ancestor::r:define/@name", namespaces=RNG) == ["ids"]
    assert _only_ref(name_el) == "objectNameWithSlash"
    assert _pattern(_define(basic, "objectNameWithSlash")) == ["[^\\n]+"]
    (uuid_el,) = [e for e in elements["uuid"] if ids in e.iterancestors()]
    assert _only_ref(uuid_el) == "UUID"
    assert sorted(_pattern(_define(basic, "UUID"))) == sorted([
        "[a-fA-F0-9]{32}", "[a-fA-F0-9]{8}\\-([a-fA-F0-9]{4}\\-){3}[a-fA-F0-9]{12}"])
    (title_el,) = elements["title"]
    assert _only_ref(title_el) == "objectNameWithSlash"
    (desc_el,) = elements["description"]
    assert [k.tag for k in desc_el] == [f"{{{RNG['r']}}}text"]
    # metadata: any number of customElement; a customElement allows anything inside
    meta = _define(basic, "metadata")
    assert meta.xpath("r:element[@name='metadata']/r:zeroOrMore/r:ref/@name",
                      namespaces=RNG) == ["customElement"]
    custom = _define(basic, "customElement")
    inner = custom.xpath("r:element/r:zeroOrMore/r:choice/*", namespaces=RNG)
    assert sorted(etree.QName(e).localname for e in inner) == ["attribute", "ref", "text"]
    assert custom.xpath("r:element/r:anyName", namespaces=RNG)
    assert custom.xpath("r:element/r:zeroOrMore/r:choice/r:attribute/r:anyName",
                        namespaces=RNG)
    assert not custom.xpath(".//r:except | .//r:data | .//r:value", namespaces=RNG)
    # idmap: uid and gid with start, target and count, all unsignedInt
    (idmap_el,) = elements["idmap"]
    attrs = idmap_el.xpath(".//r:attribute", namespaces=RNG)
    assert len(attrs) == 6 and {_only_ref(a) for a in attrs} == {"unsignedInt"}
    assert basic.xpath("r:define[@name='unsignedInt']/r:data/@type", namespaces=RNG) == [
        "unsignedInt"]
    assert _pattern(_define(basic, "unsignedInt")) == ["[0-9]+"]  # and 0..4294967295
    # filesystem (defined once): every source's dir attribute is absDirPath, /.*
    (fs_el,) = elements["filesystem"]
    dirs = fs_el.xpath(".//r:element[@name='source']//r:attribute[@name='dir']",
                       namespaces=RNG)
    assert len(dirs) >= 1 and {_only_ref(a) for a in dirs} == {"absDirPath"}
    assert _pattern(_define(basic, "absDirPath")) == ["/.*"]
    # interface (as a device, defined once) has one mac element: address is uniMacAddr
    ifaces = [e for e in common.xpath("//r:element[@name='interface']", namespaces=RNG)
              if e.xpath("ancestor::r:define/@name", namespaces=RNG) == ["interface"]]
    assert len(ifaces) == 1
    macs = common.xpath("//r:element[@name='mac']", namespaces=RNG)
    assert len(macs) == 1
    (address,) = macs[0].xpath("r:attribute[@name='address']", namespaces=RNG)
    assert _only_ref(address) == "uniMacAddr"
    assert _pattern(_define(basic, "uniMacAddr")) == [
        "[a-fA-F0-9][02468aAcCeE](:[a-fA-F0-9]{2}){5}"]
    # the children of <domain> are one interleave: no other pattern for these names there
    contents = _define(common, "domaincontents")
    assert contents.xpath("r:interleave", namespaces=RNG)


def test_validate_still_reports_a_value_defect_in_one_of_thousands(tmp_path):
    """End to end, through the forked workers: a user template that breaks the uuid of one
    container among 2,500 otherwise same-shape ones."""
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    shipped = (paths.templates_dir() / "lxc.xml.j2").read_text()
    assert "<uuid>{{ d.uuid }}</uuid>" in shipped
    (tpl / "lxc.xml.j2").write_text(shipped.replace(
        "<uuid>{{ d.uuid }}</uuid>",
        "<uuid>{{ 'zz-not-a-uuid' if d.name == 'c1777' else d.uuid }}</uuid>"))
    inv = tmp_path / "site.yaml"
    inv.write_text("templates_dir: tpl\nhosts:\n  h:\n    containers:\n" + "".join(
        f"      c{i}: {{memory: 128MiB, description: number {i}}}\n" for i in range(2500)))
    r = CliRunner().invoke(app, ["validate", str(inv)])
    assert r.exit_code == 4, r.output
    assert "container c1777: rendered XML fails libvirt's domain.rng" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_of_many_containers_still_validates(tmp_path):
    inv = tmp_path / "site.yaml"
    inv.write_text("hosts:\n  h:\n    containers:\n" + "".join(
        f"      c{i}: {{memory: {128 + i % 3 * 64}MiB, description: number {i}}}\n"
        for i in range(2500)))
    r = CliRunner().invoke(app, ["validate", str(inv)])
    assert r.exit_code == 0, r.output
    assert "valid (2500 containers" in r.stdout


def test_golden_documents_pass_through_the_cache_as_through_check_xml():
    golden = Path(__file__).resolve().parent.parent / "golden"
    assert golden.is_dir(), golden  # part of the repository: missing is a failure, not a skip
    checker = ShapeChecker()
    for path in sorted(golden.rglob("*.xml")):
        kind = "network" if path.name.startswith("network-") else "domain"
        xml = path.read_text()
        try:
            check_xml(xml, kind, str(path))
        except TemplateError:
            continue
        checker.check(xml, kind, str(path))


# --- EarlyRender: validate renders while the site-wide checks run ---------------------------

def _many(tmp_path: Path, n: int = 2500, extra: str = "", template: str | None = None) -> Path:
    head = ""
    if template is not None:
        tpl = tmp_path / "tpl"
        tpl.mkdir()
        (tpl / "lxc.xml.j2").write_text(template)
        head = "templates_dir: tpl\n"
    inv = tmp_path / "site.yaml"
    inv.write_text(head + extra + "hosts:\n  h:\n    containers:\n" + "".join(
        f"      c{i}: {{memory: {128 + i % 3 * 64}MiB, description: number {i}}}\n"
        for i in range(n)))
    return inv


def _broken_uuid_template(name: str) -> str:
    shipped = (paths.templates_dir() / "lxc.xml.j2").read_text()
    return shipped.replace("<uuid>{{ d.uuid }}</uuid>",
                           f"<uuid>{{{{ 'zz' if d.name == '{name}' else d.uuid }}}}</uuid>")


needs_two_cpus = pytest.mark.skipif((os.cpu_count() or 1) < 2,
                                    reason="EarlyRender forks only with two CPUs or more")

# EarlyRender refuses to fork beside other threads (a lock one holds would never be released
# in the child), and a long pytest run may have some: each scenario runs in a fresh Python.
SCENARIO = """
import json, os, signal, sys
from virtmix.errors import TemplateError
from virtmix.inventory.load import load_site
from virtmix.render.templates import EarlyRender, render_all

def error_of(fn):
    try:
        return None, fn()
    except TemplateError as exc:
        return str(exc), None

early = EarlyRender()
site = load_site(sys.argv[1], connecting=False, on_entries=early.start)
pids = list(early.pids)
if sys.argv[2] == "kill":
    for pid in pids:  # whatever it had taken, it never reports
        os.kill(pid, signal.SIGKILL)
early_error, got = error_of(lambda: early.finish(site))
early.abort()
reaped = []
for pid in pids:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        reaped.append(pid)
direct_error, expected = error_of(lambda: render_all(site, check=True, keep=False, workers=1))
print(json.dumps({"pids": pids, "reaped": reaped, "early_error": early_error,
                  "direct_error": direct_error, "same": got == expected,
                  "count": len(got or [])}))
"""


def _scenario(inv: Path, mode: str = "") -> dict:
    r = subprocess.run([sys.executable, "-c", SCENARIO, str(inv), mode], capture_output=True,
                       text=True, check=True, timeout=120)
    return json.loads(r.stdout)


@needs_two_cpus
@pytest.mark.parametrize("bad", [None, "c0", "c1777", "c2499"])
def test_early_render_gives_render_alls_result_and_first_error(tmp_path, bad):
    inv = _many(tmp_path, template=_broken_uuid_template(bad) if bad else None)
    out = _scenario(inv)
    assert out["pids"], "2,500 documents on two CPUs: workers were forked"
    assert out["reaped"] == out["pids"]
    assert out["early_error"] == out["direct_error"]
    if bad is None:
        assert out["early_error"] is None and out["same"] and out["count"] == 2500
    else:
        assert f"container {bad}: rendered XML fails libvirt's domain.rng" in \
            out["early_error"]


@needs_two_cpus
def test_early_render_redoes_the_slices_of_a_worker_that_died(tmp_path):
    out = _scenario(_many(tmp_path, template=_broken_uuid_template("c2400")), "kill")
    assert out["pids"] and out["reaped"] == out["pids"]
    assert "container c2400: rendered XML fails" in out["early_error"]
    assert out["early_error"] == out["direct_error"]


@needs_two_cpus
def test_an_inventory_error_after_early_start_kills_the_workers(tmp_path):
    """A site-wide check (after the entries exist) fails: the network's host is unknown.
    The workers forked before it are killed and reaped: no process is left behind."""
    inv = _many(tmp_path, extra="networks:\n  n0: {host: nohost, bridge: vbrx0}\n")
    script = (
        "import os, sys\n"
        "from virtmix.render import templates\n"
        "real = templates.EarlyRender.start\n"
        "def start(self, site):\n"
        "    real(self, site)\n"
        "    print('forked', *self.pids, file=sys.stderr, flush=True)\n"
        "templates.EarlyRender.start = start\n"
        "from virtmix.cli import main\n"
        "sys.argv = ['virtmix', 'validate', sys.argv[1]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    try:\n"
        "        print('children left', os.waitpid(-1, os.WNOHANG), file=sys.stderr)\n"
        "    except ChildProcessError:\n"
        "        print('no children left', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", script, str(inv)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 3, r.stderr
    assert "network host 'nohost' is not a host" in r.stderr
    assert "forked " in r.stderr, "the workers had been forked before the check failed"
    assert "no children left" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_doctype_is_never_cached():
    """An internal DTD sits outside the root element the key is made of."""
    checker = ShapeChecker()
    checker.check(_doc(), "domain", "d")
    dtd = '<!DOCTYPE domain [<!ENTITY n "c1">]>\n'
    xml = dtd + _doc().replace("<name>c1</name>", "<name>&n;</name>", 1)
    checker.check(xml, "domain", "d")
    checker.check(xml, "domain", "d")
    assert checker.validated == 3


def test_the_virtmix_process_prints_its_answer_before_its_fast_exit(tmp_path):
    """validate leaves its site for the exit (cli.main ends the process without freeing it):
    the answer still reaches a pipe, in text and JSON, with exit code 0; errors keep theirs."""
    inv = _many(tmp_path, n=50)
    cmd = [sys.executable, "-m", "virtmix", "validate", str(inv)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith(
        "valid (50 containers, 0 guests, 0 networks on 1 hosts)"), r
    r = subprocess.run(cmd + ["--output", "json"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["container"] == 50
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: {h: {containers: {c: {memory: lots}}}}\n")
    r = subprocess.run([sys.executable, "-m", "virtmix", "validate", str(bad)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 3 and "memory" in r.stderr
