"""Golden XML: the rendered documents of tests/golden/site.yaml, compared after normalising.

Regenerate on purpose only: `pytest tests/core/test_golden.py --regenerate-golden`.
Every golden file is also defined against libvirt (a fresh test driver per document, from a
node file of its own) with validation on, and every element and attribute the templates can
emit must appear in some golden file. Besides the inventory's documents, the XML virtmix
writes outside the inventory's templates is golden too (EXTRA: execute's transient domain,
create's metadata, the cgroup verb's edits, plan's UUID/MAC adaptation).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from virtmix.admin.execute import execute_xml
from virtmix.domain import cputune, xmlnode
from virtmix.inventory.load import load_site
from virtmix.render.schema_check import check_xml
from virtmix.render.templates import Rendered, render_all
from virtmix.util import paths
from virtmix.util.identity import VIRTMIX_NS

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
EXPECTED = GOLDEN / "expected"
SITE = GOLDEN / "site.yaml"


def normalise(xml: str) -> str:
    """Whitespace-independent pretty form; the machine-specific inventory path masked."""
    parser = etree.XMLParser(remove_blank_text=True)
    doc = etree.fromstring(xml.encode(), parser)
    for node in doc.iter(f"{{{VIRTMIX_NS}}}entry"):
        node.set("inventory", "INVENTORY")
    return etree.tostring(doc, pretty_print=True, encoding="unicode")


def golden_name(item: Rendered) -> str:
    stem = item.address.replace("/", "--")
    if item.kind == "network":
        return f"network-{stem}.xml"
    return f"{item.kind}-{item.host}-{stem}.xml"


CASES = render_all(load_site(SITE))


def _by_address(address: str) -> str:
    return next(i.xml for i in CASES if i.address == address and i.host == "hv1")


def _cgroup_edit() -> str:
    """The `cgroup` verb's persistent edits on a definition without <cputune>."""
    root = xmlnode.parse(_by_address("classic"))
    for node in root.findall("cputune"):
        root.remove(node)
    cputune.set_sched(root, {"quota": 50000, "shares": 2048, "period": 100000})
    cputune.set_cpuset(root, "0-1")
    return xmlnode.to_string(root)


def _created() -> str:
    from types import SimpleNamespace

    from virtmix.create.workflow import mark_created
    return mark_created(_by_address("web"), SimpleNamespace(template="busybox"))


def _adapted() -> str:
    from virtmix.converge.plan_xml import adapt_domain_xml
    ifaces = (("network", "lan", "52:54:00:aa:bb:cc"),)
    return adapt_domain_xml(_by_address("web"), "11111111-2222-3333-4444-555555555555",
                            ifaces, set())


# Documents written outside the inventory's templates: file name (naming the domain) ->
# producer.
EXTRA = {
    "extra-execute-host-vmixt-exec.xml":
        lambda: execute_xml("vmixt-exec", None, "/tmp/h", 65536),
    "extra-execute-rootfs-vmixt-exec-root.xml":
        lambda: execute_xml("vmixt-exec-root", "/srv/t", "/tmp/h", 65536),
    "extra-cgroup-edit-classic.xml": _cgroup_edit,
    "extra-create-mark-web.xml": _created,
    "extra-plan-adapted-web.xml": _adapted,
}


def _compare(path: Path, actual: str, request) -> None:
    if request.config.getoption("--regenerate-golden"):
        EXPECTED.mkdir(exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"no golden file {path}; run pytest --regenerate-golden"
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            str(path), "rendered"))
        pytest.fail(f"rendered XML differs from {path.name}:\n{diff}")


@pytest.mark.parametrize("item", CASES, ids=[f"{i.host}:{i.address}" for i in CASES])
def test_rendered_matches_golden(item, request):
    _compare(EXPECTED / golden_name(item), normalise(item.xml), request)


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_written_outside_templates_matches_golden(name, request):
    _compare(EXPECTED / name, normalise(EXTRA[name]()), request)


def test_no_stale_golden_files():
    wanted = {golden_name(i) for i in CASES} | set(EXTRA)
    present = {p.name for p in EXPECTED.glob("*.xml")}
    assert present == wanted


@pytest.mark.parametrize("path", sorted(EXPECTED.glob("*.xml")), ids=lambda p: p.name)
def test_golden_passes_relaxng(path):
    check_xml(path.read_text(), "network" if path.name.startswith("network-") else "domain",
              path.name)


@pytest.fixture
def fresh_driver(tmp_path: Path):
    """A test driver of this test only (test:///NODE.xml), empty: nothing another test
    defined in the process-wide test:///default can accept or refuse a document."""
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    conn = libvirt.open(f"test://{node}")
    yield conn
    conn.close()


@pytest.mark.parametrize("path", sorted(EXPECTED.glob("*.xml")), ids=lambda p: p.name)
def test_golden_files_define_against_libvirt(path, fresh_driver):
    """libvirt itself (test driver, VALIDATE flag) accepts every golden document."""
    conn = fresh_driver
    xml = path.read_text()
    if path.name.startswith("network-"):
        net = conn.networkDefineXML(xml)
        net.undefine()
    else:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        assert dom.name() in path.name
        dom.undefine()


def _template_vocabulary() -> tuple[set[str], set[str]]:
    """Element and attribute names written literally in the shipped templates."""
    elements, attributes = set(), set()
    for tpl in paths.templates_dir().glob("*.j2"):
        text = re.sub(r"\{#.*?#\}", "", tpl.read_text(), flags=re.S)
        elements |= set(re.findall(r"<([a-z_]+)[\s/>]", text))
        attributes |= set(re.findall(r"\s([a-z_]+)='", text))
    return elements, attributes


def test_every_template_property_is_exercised():
    elements, attributes = _template_vocabulary()
    seen_el, seen_attr = set(), set()
    for path in EXPECTED.glob("*.xml"):
        for node in etree.parse(str(path)).iter():
            if isinstance(node.tag, str):
                seen_el.add(etree.QName(node).localname)
                seen_attr |= set(node.attrib)
    # Attribute names coming from data (metadata keys) are checked by the metadata test.
    assert elements - seen_el == set(), "elements no golden file exercises"
    assert attributes - seen_attr == set(), "attributes no golden file exercises"


def test_parallel_rendering_gives_the_same_documents_in_order():
    site = load_site(SITE)
    serial = render_all(site, check=True, workers=1)
    parallel = render_all(site, check=True, workers=2)
    assert parallel == serial
