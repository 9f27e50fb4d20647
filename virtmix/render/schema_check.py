"""Check rendered XML against libvirt's own RelaxNG schemas (shipped with libvirt)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from lxml import etree

from virtmix.errors import TemplateError

SCHEMA_DIRS = [Path(os.environ.get("VIRTMIX_LIBVIRT_SCHEMAS", "/usr/share/libvirt/schemas"))]


@lru_cache(maxsize=4)
def relaxng(kind: str) -> etree.RelaxNG:
    """The compiled schema for 'domain' or 'network' (compiled once per process)."""
    for d in SCHEMA_DIRS:
        path = d / f"{kind}.rng"
        if path.is_file():
            return etree.RelaxNG(etree.parse(str(path)))
    raise TemplateError(
        f"libvirt's RelaxNG schema {kind}.rng not found in "
        f"{', '.join(map(str, SCHEMA_DIRS))}; install libvirt (scripts/setup-host.sh) or set "
        "VIRTMIX_LIBVIRT_SCHEMAS")


def check_xml(xml: str, kind: str, what: str) -> None:
    """Raise TemplateError naming `what` when `xml` is not valid libvirt `kind` XML."""
    try:
        doc = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as exc:
        raise TemplateError(f"{what}: rendered XML is not well-formed: {exc}") from None
    schema = relaxng(kind)
    if not schema.validate(doc):
        err = schema.error_log.last_error
        raise TemplateError(f"{what}: rendered XML fails libvirt's {kind}.rng "
                            f"(line {err.line}: {err.message})")


# --- Schema verdicts cached by shape (validate of a large inventory) ---------------------------
#
# RelaxNG-checking one domain document costs ~50 us in libxml2: 4-5 s of CPU for 85,000
# containers, most of `virtmix validate`'s time. Documents rendered from one template for
# entries that differ only in name, uuid, description, paths and metadata are the same
# document up to a few values, so the schema's verdict on one of them holds for all the
# others, as long as each of those values is itself checked. The argument, against libvirt's
# schemas (domain.rng and what it includes; tests/core/test_shape_cache.py checks these
# facts against the installed copy):
#
#  * RelaxNG is a grammar over the tree: whether a document is valid depends on its elements,
#    attributes and values. Where every pattern that can match a position in the tree accepts
#    a value exactly when it matches one datatype T, replacing a value matching T by another
#    matching T cannot change the verdict (no other pattern looks at that value).
#  * The positions and their datatypes (each element is defined once in domaincommon.rng; the
#    children of <domain> are one <interleave>, whose operands cannot share element names):
#      /domain/name, /domain/title        objectNameWithSlash  [^\n]+
#      /domain/uuid                       UUID                 32 hex, or 8-4-4-4-12 hex
#      /domain/description                <text/>              anything
#      what is inside each element child of /domain/metadata: customElement, anything
#      /domain/idmap/{uid,gid}/@target    unsignedInt (@start, @count: compared exactly)
#      /domain/devices/filesystem/source/@dir  absDirPath      /.* (both branches with a dir)
#      /domain/devices/interface/mac/@address  uniMacAddr      a unicast MAC
#  * Each value is tested here with a pattern at least as strict as T (a value that passes it
#    passes T). A value that passes is replaced by a fixed placeholder that passes too; one
#    that does not stays in the key as it is, so it is compared exactly. Two documents with
#    the same key therefore differ only in values that both pass T at the same positions.
#  * The key is the whole serialised root element after that (plus its kind); any other
#    difference, a value, an attribute, an element, whitespace, gives another key. What lies
#    outside the root is comments and processing instructions, which RelaxNG ignores, or a
#    DOCTYPE: a document with one is never cached.
#
# So a document whose key has been seen valid is valid; every other document is validated by
# libxml2 as before, and a failure is reported from the original document with the same
# message as check_xml. Only valid shapes are remembered.

_NAME = re.compile(r"[^\n\r]+").fullmatch  # stricter than objectNameWithSlash (no CR either)
_UUID = re.compile(r"[a-fA-F0-9]{32}|[a-fA-F0-9]{8}-(?:[a-fA-F0-9]{4}-){3}[a-fA-F0-9]{12}"
                   ).fullmatch
_ABS_DIR = re.compile(r"/[^\n\r]*").fullmatch  # XSD's '.' matches anything but \n and \r
_MAC = re.compile(r"[a-fA-F0-9][02468aAcCeE](?::[a-fA-F0-9]{2}){5}").fullmatch  # uniMacAddr


def _uint(value: str) -> bool:
    """xsd:unsignedInt, stricter: 1-10 ASCII digits (the type also allows '+' and spaces)
    up to 2**32 - 1 (ten digits compare as strings)."""
    n = len(value)
    return 0 < n <= 10 and value.isascii() and value.isdigit() and (
        n < 10 or value <= "4294967295")


def _normalise_domain(root: etree._Element) -> None:
    """Replace, in place, the values at the positions argued above by placeholders that pass
    the same checks. (One loop over the root's children with inlined tests: this runs for
    every container of a large inventory.)"""
    for child in root:
        tag = child.tag
        if tag == "name" or tag == "title":
            if len(child) == 0:  # no child element, comment or PI: .text is the whole value
                text = child.text
                if text is not None and _NAME(text):
                    child.text = "x"
        elif tag == "uuid":
            if len(child) == 0:
                text = child.text
                if text is not None and _UUID(text):
                    child.text = "0" * 32
        elif tag == "description":
            if len(child) == 0:
                child.text = None  # <text/>: any text at all
        elif tag == "metadata":
            # customElement: any name, any attributes, any text, any customElement children.
            # Only the element children's contents are free; what sits directly in
            # <metadata> (its attributes, text, the tails) stays in the key.
            for el in child:
                if isinstance(el.tag, str):  # an element (not a comment or PI)
                    el.clear(keep_tail=True)
        elif tag == "idmap":
            # Only the host id where the range starts differs between containers (isolated
            # ranges); start and count stay in the key: fewer calls, as sound.
            for ids in child:
                if ids.tag == "uid" or ids.tag == "gid":
                    value = ids.get("target")
                    if value is not None and _uint(value):
                        ids.set("target", "0")
        elif tag == "devices":
            for dev in child:
                dev_tag = dev.tag
                if dev_tag == "filesystem":
                    for source in dev:
                        if source.tag == "source":
                            value = source.get("dir")
                            if value is not None and _ABS_DIR(value):
                                source.set("dir", "/")
                elif dev_tag == "interface":
                    for mac in dev:
                        if mac.tag == "mac":
                            value = mac.get("address")
                            if value is not None and _MAC(value):
                                mac.set("address", "52:54:00:00:00:00")


def shape_key(root: etree._Element, kind: str) -> str:
    """`root` serialised with its checked values replaced (changes `root`), and its kind."""
    if kind == "domain" and root.tag == "domain":
        _normalise_domain(root)
    return kind + "\0" + etree.tostring(root, encoding="unicode")


MAX_SHAPES = 4096  # remembered per checker (~1.5 KB each); past that, new shapes are validated


class ShapeChecker:
    """check_xml with the schema verdicts of shapes already seen valid remembered (see above).
    One per process or batch of documents: the set holds the keys of valid shapes only, in
    full (no digest, so no collision to argue about), at most MAX_SHAPES of them."""

    # After this many documents, a checker that found almost no shape twice stops making
    # keys (~18 us a document) and validates each document directly, as check_xml does.
    PROBE = 512

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.validated = 0  # documents libxml2 checked (for tests and the benchmark)
        self.seen = 0
        self.direct = False

    def check(self, xml: str, kind: str, what: str) -> None:
        self.seen += 1
        if self.direct:
            self.validated += 1
            check_xml(xml, kind, what)
            return
        if self.seen == self.PROBE and self.validated * 10 > self.PROBE * 9:
            self.direct = True  # over 90% misses: every document its own shape
        data = xml.encode()
        try:
            doc = etree.fromstring(data)
        except etree.XMLSyntaxError as exc:
            raise TemplateError(f"{what}: rendered XML is not well-formed: {exc}") from None
        if b"<!DOCTYPE" in data:
            # A DTD lives outside the root element the key is made of (entities, attribute
            # defaults): such a document is validated on its own, every time.
            self.validated += 1
            check_xml(xml, kind, what)
            return
        key = shape_key(doc, kind)
        if key in self.valid:
            return
        self.validated += 1
        check_xml(xml, kind, what)  # the original document, messages as ever
        if len(self.valid) < MAX_SHAPES:
            self.valid.add(key)
