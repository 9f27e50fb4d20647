"""The shipped debian profile gives its containers ps and ip (procps, iproute2), as
`virtmix create --template debian` does, and the profiles built on it keep them."""

from __future__ import annotations

import pytest
import yaml

from virtmix.create.workflow import CreateRequest, build_site
from virtmix.inventory.load import load_site
from virtmix.rootfs.from_model import spec_from_model


@pytest.mark.parametrize("profile", ["debian", "apache", "mysql-small"])
def test_profile_containers_get_procps_and_iproute2(profile, tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text(yaml.safe_dump({"hosts": {"h": {"containers": {"c1": {"profile": profile}}}}}))
    spec = spec_from_model(load_site(inv).find("c1").spec.rootfs)
    assert {"procps", "iproute2"} <= set(spec.packages)


def test_debian_profile_and_create_template_share_one_base(tmp_path):
    inv = tmp_path / "s.yaml"
    inv.write_text(yaml.safe_dump({"hosts": {"h": {"containers": {"c1": {"profile": "debian"}}}}}))
    from_profile = spec_from_model(load_site(inv).find("c1").spec.rootfs)
    _site, entry = build_site(CreateRequest(name="c1", uri="lxc:///system"))
    from_create = spec_from_model(entry.spec.rootfs)
    arch = "amd64"
    assert from_profile.cache_key(arch) == from_create.cache_key(arch)
