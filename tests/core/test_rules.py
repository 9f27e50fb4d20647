"""Validation at the edge: one rule per value (inventory.rules), the model's, wherever a
value comes in (inventory, `virtmix create`, `virtmix rootfs build`, the storage)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from virtmix.create.workflow import CreateRequest, build_site
from virtmix.errors import InventoryError, RootfsError, UsageError
from virtmix.inventory.load import load_site
from virtmix.inventory.model import Container, RootfsBuild
from virtmix.inventory.rules import VARIANTS
from virtmix.rootfs.spec import ContainerSetup, RootfsSpec
from virtmix.rootfs.storage import Storage


@pytest.mark.parametrize("variant", [*VARIANTS, "essential", "huge"])
def test_rootfs_and_model_agree_on_variants(variant):
    try:
        RootfsBuild(variant=variant)
        model_ok = True
    except ValidationError:
        model_ok = False
    try:
        RootfsSpec(variant=variant)
        rootfs_ok = True
    except RootfsError:
        rootfs_ok = False
    assert model_ok == rootfs_ok == (variant in VARIANTS)


@pytest.mark.parametrize("name", ["web1", "a" * 64, "a" * 65, "a+b", "a..b", "-a", "x.y_z-1"])
def test_storage_model_and_rootfs_agree_on_names(tmp_path, name):
    def ok(call) -> bool:
        try:
            call()
            return True
        except (ValidationError, RootfsError, ValueError):
            return False

    from virtmix.inventory.rules import check_name

    model = ok(lambda: check_name(name))
    storage = ok(lambda: Storage(tmp_path).container_dir(name))
    setup = ok(lambda: ContainerSetup(name=name, hostname="h"))
    assert model == storage == setup


@pytest.mark.parametrize(("kw", "option"), [
    ({"hostname": "bad_host!"}, "--hostname: not a hostname"),
    ({"packages": ("bad;rm",)}, "--package: not a Debian package name"),
    ({"ssh_keys": ("not a key",)}, "--ssh-key: not an ssh public key"),
    ({"variant": "essential"}, "--variant"),
])
def test_create_names_the_option_from_the_models_key(tmp_path: Path, kw, option):
    fields = {"name": "vmixt-rules", "uri": "lxc:///system", "storage_dir": str(tmp_path), **kw}
    with pytest.raises(UsageError) as exc:
        build_site(CreateRequest(**fields))
    assert exc.value.message.startswith(option), exc.value.message


def test_inventory_refuses_what_rootfs_would_refuse_at_load(tmp_path: Path):
    inv = tmp_path / "site.yaml"
    inv.write_text("hosts:\n  h:\n    containers:\n      a: {hostname: bad_host!, "
                   "timezone: ../../etc/passwd}\n")
    with pytest.raises(InventoryError) as exc:
        load_site(inv)
    assert "hostname" in str(exc.value)
    with pytest.raises(ValidationError):
        Container(timezone="../x")
