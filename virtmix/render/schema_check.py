"""Check rendered XML against libvirt's own RelaxNG schemas (shipped with libvirt)."""

from __future__ import annotations

import os
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
