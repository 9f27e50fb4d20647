"""The two YAML loaders must agree: the fast one is only an accelerator."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from virtmix.errors import InventoryError
from virtmix.inventory import yamlio

REPO = Path(__file__).resolve().parents[2]


def reference(text: str):
    return yaml.load(text, Loader=yaml.SafeLoader)


def loaded(tmp_path: Path, text: str):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    return yamlio.read_yaml(p)[0]


@pytest.mark.parametrize("path", sorted(
    [*REPO.glob("examples/*.yaml"), *REPO.glob("profiles/*.yaml"),
     *REPO.glob("tests/golden/**/*.yaml")]), ids=lambda p: p.name)
def test_repo_files_load_as_pyyaml_reads_them(path):
    assert yamlio.read_yaml(path)[0] == reference(path.read_text())


@pytest.mark.parametrize("text", [
    "a: yes\nb: No\nc: on\nd: OFF\n", "base: &b {x: 1}\nc: {<<: *b, y: 2}\n",
    "e: 0o17\nf: 017\ng: 1_000\n", "h: 2001-12-14\n", "i: 1e3\nj: 1.5e3\n", "k: 12:30\n",
    "mac: 52:54:00:12:34:56\n", "l: [y, n]\n", "v: {0: '0', 1: '1'}\n", "s: 'yes'\n",
    "m: |\n  no\n  yes\n", "x: -1\ny: +3\nz: .inf\nw: ~\n", "t: 2001-12-14T21:59:43Z\n",
])
def test_version_sensitive_scalars_keep_pyyaml_meaning(tmp_path, text):
    assert loaded(tmp_path, text) == reference(text)


scalars = st.one_of(
    st.sampled_from(["yes", "no", "on", "off", "y", "n", "true", "False", "~", "null", "0o7",
                     "017", "1_0", "1e3", "1.5", "12:30", "2001-01-02", "0x1f", "-1", "+2",
                     "0-1", "256MiB", "a b", "lxc:///system", ".inf", "0b101", "0_.", "1.", ".5",
                     "1.5e3", "1.5e+3", "1:2:3", "-0", "0.0", "1__0", "+.inf", "0x_1"]),
    st.integers(-1000, 1000).map(str),
    st.text("abcxyz019-:._+eEob ", min_size=1, max_size=8).map(str.strip).filter(bool),
)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), scalars, min_size=1,
                       max_size=6))
def test_any_plain_scalar_document_agrees(tmp_path_factory, mapping):
    text = "".join(f"{k}: {v}\n" for k, v in mapping.items())
    try:
        expected = reference(text)
    except (yaml.YAMLError, ValueError):  # ValueError: PyYAML's own int('', 2) on `0b_`
        with pytest.raises(InventoryError):
            loaded(tmp_path_factory.mktemp("y"), text)
        return
    assert loaded(tmp_path_factory.mktemp("y"), text) == expected


def test_duplicate_keys_are_refused_on_both_paths(tmp_path):
    for text in ("a: 1\na: 2\n", "a: yes\na: no\n"):
        with pytest.raises(InventoryError, match="key appears twice"):
            loaded(tmp_path, text)


def _keypaths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _keypaths(v, (*prefix, k))


def test_large_documents_find_lines_from_the_text_as_compose_does():
    """Past COMPOSE_LIMIT, line_of reads indentation instead of composing the document (7 s
    for 10 MB, once per error): on the shipped examples both give the same lines."""
    from virtmix.inventory.yamlio import _line_by_text, line_of

    repo = Path(__file__).resolve().parents[2]
    files = [*sorted((repo / "examples").glob("*.yaml")), repo / "tests/golden/site.yaml"]
    checked = 0
    for path in files:
        text = path.read_text()
        data = yaml.safe_load(text)
        for keypath in _keypaths(data):
            assert _line_by_text(text, keypath) == line_of(text, keypath), (path, keypath)
            checked += 1
    assert checked > 100


def test_many_errors_in_a_large_inventory_are_reported_quickly(tmp_path):
    import time

    from virtmix.inventory.load import load_site

    lines = ["hosts:", "  h:", "    containers:"]
    lines += [f"      c{i}: {{memory: {'1x' if i % 50 == 0 else '64MiB'}, description: entry "
              f"number {i} with some text}}" for i in range(12000)]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 256 * 1024
    t0 = time.monotonic()
    with pytest.raises(InventoryError) as exc:
        load_site(path)
    assert time.monotonic() - t0 < 5
    assert "big.yaml:4: hosts.h.containers.c0.memory" in str(exc.value)
    assert "big.yaml:54: hosts.h.containers.c50.memory" in str(exc.value)
    assert "and 220 more" in str(exc.value)  # 240 problems, 20 listed


@pytest.mark.parametrize("text", ["a: !!str 12\n", "a: !!binary G1szMW0=\n",
                                  "a: !!set {x, y}\n", "a: [1, !!float 2]\n"])
def test_tagged_documents_mean_the_same_whichever_loader(tmp_path, text, monkeypatch):
    """pyyaml-rs drops tags (!!binary G1sz... would be the text 'G1sz...'): documents with a
    tag always go to PyYAML."""
    fast = loaded(tmp_path, text)
    monkeypatch.setattr(yamlio, "_fast", None)
    assert loaded(tmp_path, text) == fast == reference(text)


_REFERENCE_BOOL = re.compile(r"<<|(?:^|[\s\[{,:-])(?i:yes|no|on|off|y|n)\s*(?:$|[,\]}#])",
                             re.MULTILINE)


def _reference_version_sensitive(text: str) -> bool:
    """The plain form of yamlio._version_sensitive: one search, every token looked at."""
    if _REFERENCE_BOOL.search(text) or ("!" in text and yamlio._TAG.search(text)):
        return True
    return any("_" in t or ":" in t or yamlio._NUMERIC_DIFFERS.fullmatch(t)
               for t in yamlio._NUMERIC_TOKEN.findall(text))


@settings(max_examples=3000, deadline=None)
@given(st.text(" \t\r\n[]{},:#-+.!<012789eEobxyYnNOofF_", max_size=40))
def test_version_sensitive_scan_agrees_with_its_plain_form(text):
    assert yamlio._version_sensitive(text) == _reference_version_sensitive(text)


def _big(tail: str) -> str:
    """A document over PARALLEL_SCAN_BYTES (lowered by the test), whose last line decides
    its YAML version."""
    lines = [f"k{i}: {{memory: 128MiB, shares: {i % 7}, note: entry {i}}}" for i in range(300)]
    text = "\n".join(lines) + "\n" + tail
    assert len(text) > yamlio.PARALLEL_SCAN_BYTES
    return text


@pytest.mark.parametrize("tail", ["last: yes\n", "last: plain\n"])
def test_large_documents_scan_beside_the_parse_with_the_same_result(tmp_path, monkeypatch,
                                                                    tail):
    """Above PARALLEL_SCAN_BYTES the YAML-version scan runs in a forked child while pyyaml-rs
    parses; where fork fails it runs in-process. Either way the document means what PyYAML
    reads, and no child is left behind."""
    monkeypatch.setattr(yamlio, "PARALLEL_SCAN_BYTES", 1000)
    forks = []
    real_fork = os.fork

    def counted_fork():
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(yamlio.os, "fork", counted_fork)
    # Other tests may leave threads behind (virtmix then scans in-process); the child here
    # only scans and exits.
    monkeypatch.setattr(yamlio.threading, "active_count", lambda: 1)
    text = _big(tail)
    expected = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    assert loaded(tmp_path, text) == expected
    assert forks == [1]  # the scan ran in a child
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # every child reaped

    def no_fork():
        raise OSError("no fork here")

    monkeypatch.setattr(yamlio.os, "fork", no_fork)
    assert loaded(tmp_path, text) == expected
