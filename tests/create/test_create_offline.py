"""`virtmix create` without the real daemon: the in-memory entry, its XML, refusals, destroy/info
of created domains on libvirt's test driver (a node file holding the domain)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.create.workflow import CreateRequest, build_site, mark_created
from virtmix.errors import UsageError
from virtmix.render.schema_check import check_xml
from virtmix.render.templates import render_domain
from virtmix.rootfs import Storage
from virtmix.rootfs.storage import CONTAINER_MARKER
from virtmix.util.identity import VIRTMIX_NS
from virtmix.util.idranges import home_slot, slot_range

PFX = "vmixt-create-"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"VIRTMIX_INVENTORY": None,
                                                 "LIBVIRT_DEFAULT_URI": None,
                                                 "VIRTMIX_STORAGE": None})
    assert "Traceback" not in result.stdout + result.stderr
    return result


def rendered(tmp_path: Path, **kw) -> etree._Element:
    req = CreateRequest(name=PFX + "x", uri="lxc:///system", storage_dir=str(tmp_path), **kw)
    site, entry = build_site(req)
    xml = mark_created(render_domain(site, entry), req)
    check_xml(xml, "domain", "created container")  # libvirt's own RelaxNG schema
    return etree.fromstring(xml.encode())


def test_created_definition_is_valid_and_marked(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VIRTMIX_IDMAP", "isolated")  # not this machine's cgroup layout's
    root = rendered(tmp_path, memory="256MiB", cpuset="0", shares=512, network="net0",
                    ipv4="192.0.2.5/24", gateway="192.0.2.1")
    meta = root.find(f"metadata/{{{VIRTMIX_NS}}}entry").attrib
    assert meta["created-by"] == "create" and meta["template"] == "debian"
    assert "site" not in meta and "inventory" not in meta
    assert meta["privileged"] == "false"
    assert root.findtext("memory") == str(256 * 1024)
    assert root.find("vcpu").get("cpuset") == "0"
    assert root.findtext("cputune/shares") == "512"
    # its own id range (was the shared 100000 before isolated ranges), from its name
    own = str(slot_range(home_slot(PFX + "x"))[1])
    assert root.find("idmap/uid").get("target") == root.find("idmap/gid").get("target") == own
    assert root.find("devices/interface/source").get("network") == "net0"
    assert root.find("devices/interface/ip").get("address") == "192.0.2.5"
    src = root.find("devices/filesystem/source").get("dir")
    assert src == f"{Storage(tmp_path).root}/containers/{PFX}x/rootfs"


def test_privileged_has_no_idmap_and_says_so(tmp_path: Path):
    root = rendered(tmp_path, privileged=True)
    assert root.find("idmap") is None
    assert root.find(f"metadata/{{{VIRTMIX_NS}}}entry").get("privileged") == "true"
    assert root.find("features/privnet") is not None  # no interface: own netns anyway


def test_template_packages_are_in_the_spec(tmp_path: Path):
    req = CreateRequest(name=PFX + "p", uri="lxc:///system", storage_dir=str(tmp_path),
                        packages=("curl",))
    _site, entry = build_site(req)
    assert entry.spec.rootfs.packages == ["curl", "iproute2", "procps"]


@pytest.mark.parametrize(("kw", "phrase"), [
    ({"name": "../etc"}, "NAME: unsafe name"),
    ({"memory": "lots"}, "--memory: cannot parse size"),
    ({"memory": "1MiB"}, "--memory: memory of 1024 KiB is too small"),
    ({"cpuset": "x"}, "--cpuset"),
    ({"shares": 1}, "--shares"),
    ({"ipv4": "192.0.2.5/24"}, "need an interface"),
    ({"network": "a", "bridge": "br0"}, "give one of them"),
    ({"network": "a", "ipv4": "300.1.1.1/24"}, "--ipv4"),
    ({"template": "centos"}, "--template 'centos'"),
    ({"ssh_keys": ("not a key",)}, "--ssh-key"),
    ({"suite": "Bad Suite"}, "--suite"),
    ({"template": "busybox", "sshd": True}, "--sshd: not for --template busybox"),
    ({"template": "busybox", "packages": ("curl",)}, "--package: not for --template busybox"),
])
def test_bad_requests_are_usage_errors(tmp_path: Path, kw: dict, phrase: str):
    fields = {"name": PFX + "bad", "uri": "lxc:///system", "storage_dir": str(tmp_path), **kw}
    with pytest.raises(UsageError) as exc:
        build_site(CreateRequest(**fields))
    assert phrase in exc.value.message


def test_cli_bad_option_exits_2_and_makes_nothing(tmp_path: Path):
    storage = tmp_path / "storage"
    result = invoke("create", PFX + "m", "-c", "test:///default", "--storage", str(storage),
                    "--memory", "lots")
    assert result.exit_code == 2, result.stderr
    assert "--memory" in result.stderr
    assert not storage.exists()


def test_cli_literal_root_password_refused(tmp_path: Path):
    result = invoke("create", PFX + "pw", "-c", "test:///default", "--storage",
                    str(tmp_path / "s"), "--root-password", "hunter2")
    assert result.exit_code == 2
    assert "only 'generate'" in result.stderr and "hunter2" not in result.stderr


def test_cli_existing_name_exits_9_and_makes_nothing(tmp_path: Path):
    # test:///default always holds a domain named "test".
    storage = tmp_path / "storage"
    result = invoke("create", "test", "-c", "test:///default", "--storage", str(storage))
    assert result.exit_code == 9, result.stderr
    assert "already exists" in result.stderr
    assert not storage.exists()


def test_cli_unknown_network_exits_6_and_makes_nothing(tmp_path: Path):
    storage = tmp_path / "storage"
    result = invoke("create", PFX + "n", "-c", "test:///default", "--storage", str(storage),
                    "--network", "nosuchnet")
    assert result.exit_code == 6, result.stderr
    assert "no such libvirt network" in result.stderr
    assert not storage.exists()


def test_cli_existing_tree_exits_9(tmp_path: Path):
    st = Storage(tmp_path / "storage")
    st.ensure()
    cdir = st.container_dir(PFX + "t")
    cdir.mkdir()
    (cdir / "keep").write_text("x")
    result = invoke("create", PFX + "t", "-c", "test:///default", "--storage", str(st.root))
    assert result.exit_code == 9, result.stderr
    assert "already exists" in result.stderr
    assert (cdir / "keep").read_text() == "x"


# -- destroy and info of a created domain, on the test driver --------------------------------
def _node(tmp_path: Path, name: str, tree: Path, created: bool) -> str:
    meta = "created-by='create' template='debian'" if created else "site='s' inventory='i'"
    node = tmp_path / "node.xml"
    node.write_text(f"""<node><domain type='lxc'><name>{name}</name>
  <metadata><virtmix:entry xmlns:virtmix='{VIRTMIX_NS}' name='{name}' kind='container'
    {meta}/></metadata>
  <memory>65536</memory><os><type>exe</type><init>/sbin/init</init></os>
  <devices><filesystem type='mount' accessmode='passthrough'><source dir='{tree}'/>
    <target dir='/'/></filesystem></devices>
</domain></node>""")
    return f"test://{node}"


def _tree(tmp_path: Path, name: str) -> tuple[Storage, Path]:
    st = Storage(tmp_path / "storage")
    st.ensure()
    cdir = st.container_dir(name)
    (cdir / "rootfs" / "etc").mkdir(parents=True)
    (cdir / CONTAINER_MARKER).write_text(name + "\n")
    st.write_state(name, {"virtmix": 1, "name": name, "method": "copy",
                          "cache_entry": "debian-bookworm-minbase-amd64-x",
                          "idmap": [0, 100000, 65536], "privileged": False,
                          "root_login": "locked", "created": "now"})
    return st, cdir


def test_destroy_of_a_created_domain_asks_then_deletes_its_tree(tmp_path: Path):
    name = PFX + "d1"
    _st, cdir = _tree(tmp_path, name)
    uri = _node(tmp_path, name, cdir / "rootfs", created=True)
    refused = invoke("-c", uri, "destroy", name)  # no terminal, no --yes: nothing happens
    assert refused.exit_code == 2
    assert "delete their root filesystems and snapshots permanently" in refused.stderr
    assert "made by virtmix create" in refused.stdout
    assert cdir.is_dir()
    result = invoke("-c", uri, "destroy", name, "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"{name}: removed, deleted {cdir}" in result.stdout
    assert not cdir.exists()


def test_destroy_of_an_inventory_domain_keeps_its_tree(tmp_path: Path):
    name = PFX + "d2"
    _st, cdir = _tree(tmp_path, name)
    uri = _node(tmp_path, name, cdir / "rootfs", created=False)
    result = invoke("-c", uri, "destroy", name, "--yes")
    assert result.exit_code == 0, result.stderr
    assert "deleted" not in result.stdout
    assert cdir.is_dir()


def test_info_shows_the_tree_state(tmp_path: Path):
    name = PFX + "i1"
    _st, cdir = _tree(tmp_path, name)
    uri = _node(tmp_path, name, cdir / "rootfs", created=True)
    result = invoke("-c", uri, "info", name)
    assert result.exit_code == 0, result.stderr
    lines = dict(ln.split(":", 1) for ln in result.stdout.splitlines())
    assert lines["clone"].strip() == "copy"
    assert lines["base"].strip() == "debian-bookworm-minbase-amd64-x"
    assert lines["tree"].strip() == "unprivileged (ids shifted by 100000)"
    assert "virtmix create" in lines["created by"]


def test_progress_bar_moves_through_the_build_stages():
    from virtmix.cli.create_cmds import BarReport

    report = BarReport(2, live=True)
    task = report.bar.tasks[0]
    report.begin("root filesystem")
    report.detail("mmdebstrap bookworm (minbase, amd64)")
    assert task.completed == 0
    report.detail("extracting archives...")
    assert task.completed == pytest.approx(0.25)
    report.detail("installing remaining packages inside the chroot...")
    assert task.completed == pytest.approx(0.55)
    report.end("root filesystem", 30.0)
    assert task.completed == 1
    report.begin("define")
    report.end("define", 0.1)
    assert task.completed == task.total == 2


def test_busybox_entry_uses_its_own_tree(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VIRTMIX_IDMAP", "isolated")  # not this machine's cgroup layout's
    root = rendered(tmp_path, template="busybox")
    assert root.find(f"metadata/{{{VIRTMIX_NS}}}entry").get("template") == "busybox"
    # unprivileged like debian, in its own range (was the shared 100000)
    assert root.find("idmap/uid").get("target") == str(slot_range(home_slot(PFX + "x"))[1])
    src = root.find("devices/filesystem/source").get("dir")
    assert src == f"{Storage(tmp_path).root}/containers/{PFX}x/rootfs"


def test_a_locked_root_without_a_key_is_said_with_how_to_add_one():
    from virtmix.create.workflow import CreateRequest, locked_root_note

    note = locked_root_note(CreateRequest(name="c1", uri="lxc:///system"))
    assert note and "locked and has no ssh key" in note
    assert "--ssh-key" in note and "ssh_keys:" in note and "authorized_keys" in note
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxx me@h"
    assert locked_root_note(CreateRequest(name="c1", uri="u", ssh_keys=(key,))) is None
    assert locked_root_note(CreateRequest(name="c1", uri="u", root_password=True)) is None
