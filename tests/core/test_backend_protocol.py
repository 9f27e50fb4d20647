"""The backend boundary: one typed Protocol the libvirt implementation satisfies, connection
failures kept apart from connections, destroy outcomes as values, not string prefixes."""

from __future__ import annotations

import inspect

from virtmix.backend import Backend, open_connection
from virtmix.backend.libvirt_conn import Connection
from virtmix.converge.apply import connect_and_observe, connection_failures
from virtmix.converge.destroy import Outcome, Target, destroy_target

NODE = """<node>
  <domain type='test'><name>test</name><memory>65536</memory><vcpu>1</vcpu>
    <os><type>hvm</type></os></domain>
</node>"""


def _own_driver(tmp_path) -> str:
    """A test driver of this test alone (test:///default is shared by the process)."""
    (tmp_path / "node.xml").write_text(NODE)
    return f"test://{tmp_path}/node.xml"


def _members(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_connection_has_every_protocol_member_with_the_same_parameters():
    missing = _members(Backend) - _members(Connection)
    assert not missing
    for name in _members(Backend) - {"uri", "driver"}:
        want = inspect.signature(getattr(Backend, name))
        have = inspect.signature(getattr(Connection, name))
        assert list(want.parameters) == list(have.parameters), name


def test_the_test_driver_is_a_backend_and_answers_through_it(tmp_path):
    conn = open_connection(_own_driver(tmp_path))
    try:
        assert isinstance(conn, Backend)
        assert conn.driver == "test"
        assert "test" in [r.name for r in conn.list_domains()]
        assert conn.runtime_info("test").vcpus >= 1
        assert "<capabilities>" in conn.capabilities()
    finally:
        conn.close()


def test_connection_failures_are_a_separate_map(tmp_path):
    bad, good = f"test://{tmp_path}/missing.xml", _own_driver(tmp_path)
    conns, observed = connect_and_observe([good, bad])
    try:
        assert set(conns) == {good}  # never an exception in place of one
        assert all(isinstance(c, Backend) for c in conns.values())
        failures = connection_failures(observed)
        assert set(failures) == {bad} and "cannot connect" in failures[bad]
    finally:
        for c in conns.values():
            c.close()


def test_destroy_outcomes_are_values(tmp_path):
    conn = open_connection(_own_driver(tmp_path))
    try:
        foreign = Target("test", "test", conn.uri, foreign="no virtmix metadata")
        destroy_target(conn, foreign, force_foreign=False, delete_rootfs=False)
        assert foreign.outcome is Outcome.REFUSED
        assert foreign.result.startswith("refused: no virtmix metadata")
        gone = Target("nope", "nope", conn.uri, exists=False)
        destroy_target(conn, gone, force_foreign=False, delete_rootfs=False)
        assert gone.outcome is Outcome.ABSENT and gone.result == "absent"
        forced = Target("test", "test", conn.uri, foreign="no virtmix metadata")
        destroy_target(conn, forced, force_foreign=True, delete_rootfs=False)
        assert forced.outcome is Outcome.REMOVED and forced.result == "removed (forced off)"
        missing = Target("test", "test", conn.uri)  # removed above: the backend says so
        destroy_target(conn, missing, force_foreign=False, delete_rootfs=False)
        assert missing.outcome is Outcome.FAILED and missing.result.startswith("failed: ")
    finally:
        conn.close()
