"""Admin CLI contracts that need no daemon: usage errors, name forms, places, helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from virtmix.admin.execute import execute_xml
from virtmix.admin.targets import LOCAL_URIS, Session
from virtmix.cli import app
from virtmix.cli.admin_run_cmds import command_words
from virtmix.hosts import is_local
from virtmix.hosts.local import is_static_elf

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "site.yaml"
runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    result = runner.invoke(app, list(args), env={"VIRTMIX_INVENTORY": None,
                                                 "LIBVIRT_DEFAULT_URI": None, **(env or {})})
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_unknown_cgroup_key_fails_before_any_connection():
    # -c points at a daemon that cannot exist: the key check must come first.
    result = invoke("-c", "test:///nonexistent/node.xml", "cgroup", "x", "memory.limt")
    assert result.exit_code == 2
    assert "did you mean 'memory.max'?" in result.stderr


def test_nested_name_needs_an_inventory():
    result = invoke("info", "dbhost/mysql0")
    assert result.exit_code == 2
    assert "needs the inventory" in result.stderr


def test_nested_name_of_an_unknown_guest():
    result = invoke("-i", str(EXAMPLE), "info", "nosuchguest/x")
    assert result.exit_code == 6
    assert "no guest named 'nosuchguest'" in result.stderr


def test_import_refuses_to_overwrite(tmp_path):
    out = tmp_path / "inv.yaml"
    out.write_text("keep me\n")
    result = invoke("import", "-o", str(out))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert out.read_text() == "keep me\n"


def test_execute_without_a_command():
    result = invoke("-c", "test:///default", "execute")
    assert result.exit_code == 2


def test_places_default_and_connect(monkeypatch):
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    # Without -i, places() also asks the local daemons for guests applied from an inventory
    # (found_sites): any guest running on this machine would add its nested URIs here.
    monkeypatch.setattr(Session, "found_sites", lambda self: [])
    assert [p.uri for p in Session().places()] == list(LOCAL_URIS)
    assert [p.uri for p in Session(connect="lxc+ssh://root@h1/system").places()] == [
        "lxc+ssh://root@h1/system"]
    assert Session(connect="lxc+ssh://root@h1/system").places()[0].host == "h1"
    # A variable naming one local driver does not hide the other (see env_limit);
    # another URI limits the verbs to it.
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    assert [p.uri for p in Session().places()] == list(LOCAL_URIS)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu+ssh://root@h1/system")
    assert [p.uri for p in Session().places()] == ["qemu+ssh://root@h1/system"]


def test_places_from_an_inventory_reach_nested_containers():
    places = Session(inventory=str(EXAMPLE)).places()
    assert {(p.uri, p.host, p.parent) for p in places} == {
        ("qemu:///system", "hv1", None), ("lxc:///system", "hv1", None),
        ("lxc+ssh://root@10.77.0.20/system", "hv1", "dbhost")}
    # -c keeps the inventory's name for its host
    only = Session(connect="lxc:///system", inventory=str(EXAMPLE)).places()
    assert [(p.uri, p.host) for p in only] == [("lxc:///system", "hv1")]


@pytest.mark.parametrize("uri, local", [
    ("lxc:///system", True), ("qemu:///system", True), ("lxc+unix:///system", True),
    ("lxc+ssh://root@h/system", False), ("qemu+tcp://h/system", False),
    ("test:///default", True),
])
def test_is_local(uri, local):
    assert is_local(uri) is local


def test_command_words():
    assert command_words(["--", "ls", "-l"]) == ["ls", "-l"]
    assert command_words(["ls", "--", "x"]) == ["ls", "--", "x"]
    assert command_words(None) == []


def test_static_elf_detection():
    assert is_static_elf("/bin/busybox")  # busybox-static (scripts/setup-host.sh)
    assert not is_static_elf(sys.executable)


def test_execute_xml_is_valid_for_libvirt():
    rng = etree.RelaxNG(etree.parse("/usr/share/libvirt/schemas/domain.rng"))
    for rootfs in (None, "/srv/tree"):
        doc = etree.fromstring(execute_xml("vmixt-admin-e", rootfs, "/tmp/h", 65536).encode())
        assert rng.validate(doc), rng.error_log
        targets = [t.get("dir") for t in doc.iter("target")]
        assert ("/" in targets) == bool(rootfs) and "/dev/.virtmix-exec" in targets


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_works_before_and_after_the_verb(where):
    """`virtmix --quiet freeze X` and `virtmix freeze X --quiet` (the test driver's running
    domain 'test'): no progress line, same exit code; without it, the line is there."""
    args = ["freeze", "test"]
    args = ["-q", *args] if where == "before" else [*args, "--quiet"]
    quiet = invoke("-c", "test:///default", *args)
    assert quiet.exit_code == 0 and quiet.stdout == "", quiet.stdout
    loud = invoke("-c", "test:///default", "freeze", "test")
    assert loud.exit_code == 0 and loud.stdout.strip() == "test: frozen (paused)"


@pytest.mark.parametrize("verb", ["apply", "destroy", "create", "start", "stop", "freeze",
                                  "unfreeze", "import"])
def test_verbs_that_report_progress_take_quiet(verb):
    assert "--quiet" in invoke(verb, "--help").stdout


def test_cgroup_takes_minus_one_as_a_value():
    """The classic "no limit" (-1) is a value, not an option; on the test driver's domain
    the memory limit reads back as max."""
    result = invoke("-c", "test:///default", "cgroup", "test", "memory.limit_in_bytes", "-1")
    assert result.exit_code == 0 and result.stdout.strip() == "max", result.output
