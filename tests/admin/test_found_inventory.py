"""Without -i, guests' recorded inventory reaches their containers; a silent guest's
containers show as unknown with the reason (never a stale state)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from virtmix.cli import app

runner = CliRunner()


def _setup(tmp_path: Path) -> tuple[str, Path]:
    inv = tmp_path / "site.yaml"
    node = tmp_path / "node.xml"
    uri = f"test://{node}"
    inv.write_text(yaml.safe_dump({"name": "found", "settings": {
        "storage_dir": str(tmp_path / "storage")}, "hosts": {"hv1": {
            "uri": uri, "lxc_uri": uri, "guests": {"g1": {
                "boot": {"kernel": "/boot/vmlinuz"},
                # nothing listens on port 1 of loopback: the guest "does not answer"
                "lxc_uri": "lxc+ssh://root@127.0.0.1:1/system?keyfile=/dev/null",
                "containers": {"c1": {"rootfs": {"path": "/srv/c1"}}}}}}}}))
    node.write_text(f"""<node><domain type='test'><name>g1</name><memory>65536</memory>
<os><type>hvm</type></os><metadata><virtmix:entry xmlns:virtmix="https://virtmix.dev/xmlns/domain/1"
 site="found" inventory="{inv}" host="hv1" name="g1" kind="guest"/></metadata>
</domain></node>""")
    return uri, inv


def test_ls_without_i_lists_nested_containers_as_unknown_when_the_guest_is_silent(
        tmp_path: Path) -> None:
    uri, inv = _setup(tmp_path)
    res = runner.invoke(app, ["ls", "-o", "json"], env={"LIBVIRT_DEFAULT_URI": uri,
                                                         "VIRTMIX_INVENTORY": None})
    assert res.exit_code == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["g1"]["kind"] == "kvm"
    assert rows["c1"]["state"] == "unknown" and rows["c1"]["parent"] == "g1"
    assert "guest g1 does not answer" in rows["c1"]["reason"]


def test_info_of_a_nested_container_of_a_silent_guest_is_unknown(tmp_path: Path) -> None:
    uri, _inv = _setup(tmp_path)
    res = runner.invoke(app, ["info", "g1/c1", "-o", "json"],
                        env={"LIBVIRT_DEFAULT_URI": uri, "VIRTMIX_INVENTORY": None})
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["state"] == "unknown" and "does not answer" in data["reason"]


def test_a_recorded_inventory_that_is_gone_is_said(tmp_path: Path) -> None:
    uri, inv = _setup(tmp_path)
    inv.unlink()
    res = runner.invoke(app, ["info", "g1/c1"], env={"LIBVIRT_DEFAULT_URI": uri,
                                                      "VIRTMIX_INVENTORY": None})
    assert res.exit_code == 2
    assert "needs the inventory" in res.stderr
    assert f"inventory {inv}, which cannot be read now" in res.stderr
