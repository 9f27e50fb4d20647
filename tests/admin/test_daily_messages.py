"""Messages a new admin meets: did-you-mean for names, mistyped files, wrong states,
what $LIBVIRT_DEFAULT_URI limits."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from virtmix.admin.targets import LOCAL_URIS, Session
from virtmix.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.yaml"
T = "test:///default"  # holds one running domain named "test"


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env={"VIRTMIX_INVENTORY": None,
                                                      "LIBVIRT_DEFAULT_URI": None,
                                                      **(env or {})})
    assert "Traceback" not in result.output
    return result


def test_did_you_mean_for_a_domain_name():
    r = invoke("-c", T, "info", "tset")
    assert r.exit_code == 6
    assert "no domain named 'tset' on test:///default; did you mean 'test'?" in r.stderr


def test_did_you_mean_for_an_entry_name():
    r = invoke("explain", str(EXAMPLE), "vm00")
    assert r.exit_code == 6
    assert "did you mean 'vm0'?" in r.stderr


def test_did_you_mean_for_a_template_name():
    r = invoke("create", "c1", "--template", "debain")
    assert r.exit_code == 2
    assert "did you mean 'debian'?" in r.stderr


def test_destroy_of_a_mistyped_inventory_file_says_the_file_does_not_exist(tmp_path):
    r = invoke("-c", T, "destroy", str(tmp_path / "nope.yaml"), "--yes")
    assert r.exit_code == 6
    assert f"{tmp_path}/nope.yaml: no such inventory file, and no domain named" in r.stderr


def test_stop_of_a_stopped_domain_says_already_stopped_without_start_hint():
    from virtmix.admin import lifecycle
    from virtmix.errors import StateError

    session = Session(connect=T)
    try:
        target = session.find("test")
        target.conn.destroy("test")
        target.refresh()
        try:
            lifecycle.stop(target, timeout=1, force=False, kill=True)
            raise AssertionError("stop of a stopped domain succeeded")
        except StateError as exc:
            assert exc.exit_code == 8
            assert "already stopped (shutoff)" in exc.message
            assert not exc.hint or "start it first" not in exc.hint
    finally:
        session.close()


def test_a_local_default_uri_does_not_hide_the_other_driver(monkeypatch):
    # found_sites asks the local daemons for applied guests: not this test's subject
    monkeypatch.setattr(Session, "found_sites", lambda self: [])
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    assert [p.uri for p in Session().places()] == list(LOCAL_URIS)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "lxc:///")
    assert [p.uri for p in Session().places()] == list(LOCAL_URIS)


def test_another_default_uri_limits_and_says_so():
    r = invoke("info", "nope", env={"LIBVIRT_DEFAULT_URI": T})
    assert r.exit_code == 6
    assert "only $LIBVIRT_DEFAULT_URI=test:///default is searched" in r.stderr
    r = invoke("ls", env={"LIBVIRT_DEFAULT_URI": T})
    assert r.exit_code == 0
    assert "$LIBVIRT_DEFAULT_URI" in r.stderr and "test" in r.stdout


def test_create_with_a_local_qemu_default_uri_makes_the_container_on_lxc(monkeypatch):
    from virtmix.cli.base import OPTIONS, default_uri

    monkeypatch.setattr(OPTIONS, "connect", None)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    assert default_uri() == "lxc:///system"
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "lxc+ssh://root@h1/system")
    assert default_uri() == "lxc+ssh://root@h1/system"


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.231.84.0/24 2 0 2
        |-- 10.231.84.0
           /24 link UNICAST
        |-- 10.231.84.10
           /32 host LOCAL
        |-- 10.231.84.77
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.231.84.10
           /32 host LOCAL
"""


def test_container_addresses_are_the_local_leaves_of_its_fib_trie():
    from virtmix.hosts.netns import netns_ipv4, parse_fib_trie

    assert parse_fib_trie(FIB_TRIE) == ["10.231.84.10", "10.231.84.77"]
    assert netns_ipv4(2**22 + 12345) == []  # no such process: nothing, no error
