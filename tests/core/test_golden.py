"""Golden XML: the rendered documents of tests/golden/site.yaml, compared after normalising.

Regenerate on purpose only: `pytest tests/core/test_golden.py --regenerate-golden`.
Every golden file is also defined against libvirt (test driver) with validation on, and every
element and attribute the templates can emit must appear in some golden file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import libvirt
import pytest
from lxml import etree

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


@pytest.mark.parametrize("item", CASES, ids=[f"{i.host}:{i.address}" for i in CASES])
def test_rendered_matches_golden(item, request):
    path = EXPECTED / golden_name(item)
    actual = normalise(item.xml)
    if request.config.getoption("--regenerate-golden"):
        EXPECTED.mkdir(exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"no golden file {path}; run pytest --regenerate-golden"
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            str(path), "rendered"))
        pytest.fail(f"rendered XML differs from {path.name}:\n{diff}")


def test_no_stale_golden_files():
    wanted = {golden_name(i) for i in CASES}
    present = {p.name for p in EXPECTED.glob("*.xml")}
    assert present == wanted


@pytest.mark.parametrize("path", sorted(EXPECTED.glob("*.xml")), ids=lambda p: p.name)
def test_golden_passes_relaxng(path):
    check_xml(path.read_text(), "network" if path.name.startswith("network-") else "domain",
              path.name)


def test_golden_files_define_against_libvirt():
    """libvirt itself (test driver, VALIDATE flag) accepts every golden document."""
    conn = libvirt.open("test:///default")
    try:
        for path in sorted(EXPECTED.glob("*.xml")):
            xml = path.read_text()
            if path.name.startswith("network-"):
                net = conn.networkDefineXML(xml)
                net.undefine()
            else:
                dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
                assert dom.name() in path.name
                dom.undefine()
    finally:
        conn.close()


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
