"""Hostile and malformed inventories (SECURITY.md, "untrusted inventory"): each is refused
with exit 3, file:line and key path, no traceback, within a second or two, nothing written;
several problems are reported together; legal but dangerous settings warn."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import app
from virtmix.errors import InventoryError
from virtmix.inventory import yamlio
from virtmix.inventory.load import load_site

runner = CliRunner()
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0h5N0s1wh1A6dBUSbXUhQJ9Bwz3uYtN8X2WcDm3vGq "
       "admin@desk")


def _write(tmp_path: Path, text: str) -> Path:
    inv = tmp_path / "site.yaml"
    inv.write_text(textwrap.dedent(text))
    return inv


def refused(tmp_path: Path, text: str, *expected: str, verb: str = "validate") -> str:
    """Run `verb` on the inventory; assert exit 3, no traceback, nothing written, the
    expected words in the message, and a bounded time. Returns stderr."""
    inv = _write(tmp_path, text)
    out = tmp_path / "rendered"
    args = [verb, str(inv)] + (["--out", str(out)] if verb == "render" else [])
    t0 = time.monotonic()
    result = runner.invoke(app, args)
    elapsed = time.monotonic() - t0
    assert result.exit_code == 3, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "unexpected error" not in result.stderr
    assert not out.exists()
    assert elapsed < 2.0, f"took {elapsed:.2f}s"
    for word in expected:
        assert word in result.stderr, (word, result.stderr)
    return result.stderr


def container(settings: str, name: str = "web") -> str:
    return f"hosts:\n  local:\n    containers:\n      {name}: {settings}\n"


# -- bounded work ----------------------------------------------------------------------
BOMB = "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + BOMB


def test_alias_bomb_is_refused_with_its_line(tmp_path):
    assert len(BOMB) < 400
    err = refused(tmp_path, BOMB, "alias bomb", "site.yaml:")
    line = int(err.split("site.yaml:")[1].split(":")[0])
    assert 2 <= line <= 9


@pytest.mark.parametrize("fast", [True, False])
def test_alias_bomb_refused_whichever_loader_would_read_it(tmp_path, monkeypatch, fast):
    """pyyaml-rs never sees a document with anchors; PyYAML's path checks the aliases."""
    if not fast:
        monkeypatch.setattr(yamlio, "_fast", None)
    path = tmp_path / "b.yaml"
    path.write_text(BOMB)
    t0 = time.monotonic()
    with pytest.raises(InventoryError, match="alias"):
        yamlio.read_yaml(path)
    assert time.monotonic() - t0 < 1.0


def test_a_few_aliases_still_work(tmp_path):
    inv = _write(tmp_path, """\
        x-defaults: &d {memory: 256MiB}
        hosts:
          local:
            containers:
              web: *d
        """)
    with pytest.raises(InventoryError, match="unknown key 'x-defaults'"):
        load_site(inv)  # the alias loaded; the extra top-level key is what is refused


def test_too_many_aliases(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlio, "MAX_ALIASES", 5)
    refused(tmp_path, "a: &a 1\nb: [" + ", ".join(["*a"] * 6) + "]\n", "more than 5 aliases")


@pytest.mark.parametrize("text, words", [
    (container("{memory: 99999999999999999999999999999TiB}"), ["memory", "larger than libvirt"]),
    (container("{memory: 1.0e400}"), ["memory"]),
    (container("{memory: 123456789012345678901234567890123456789}"), ["memory"]),
    (container("{memory: " + "9" * 5000 + "}"), ["memory"]),
    (container("{memtune: {hard_limit: 9007199254740992KiB}}"), ["hard_limit"]),
    (container("{cpu: {cpuset: '0-999999999'}}"), ["cpuset", "CPU 999999999", "8191"]),
    (container("{cpu: {cpuset: '8192'}}"), ["cpuset", "8191"]),
    ("hosts:\n  local:\n    cpus: '0-4294967296000'\n", ["hosts.local.cpus"]),
    ("hosts:\n  local:\n    guests:\n      g: {cpu: {vcpupin: {99999999999999999999: '0'}}}\n",
     ["vcpupin"]),
    (container("{vcpus: 99999999999999999999999}"), ["vcpus"]),
    (container("{cpu: {shares: .inf}}"), ["shares"]),
    (container("{cpu: {quota: -99999999999999999999999}}"), ["quota"]),
    ("hosts: " + "[" * 3000 + "]" * 3000 + "\n", ["site.yaml:1"]),
    ("hosts: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", ["site.yaml:1"]),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), ["site.yaml"]),
])
def test_numbers_and_shapes_that_do_not_fit_libvirt(tmp_path, text, words):
    refused(tmp_path, text, *words)


@pytest.mark.parametrize("text, key", [
    (container("{}", name="1"), "hosts.local.containers.1"),
    ("null: 1\nhosts: {}\n", "null"),
    ("hosts:\n  local:\n    containers:\n      web: {cgroup: {1: 2}}\n", "cgroup.1"),
    ("hosts:\n  local:\n    containers:\n      web: {cpu: {null: 1}}\n", "cpu.null"),
    ("hosts:\n  local:\n    true: {}\n", "hosts.local.True"),
])
def test_mapping_keys_that_are_not_strings(tmp_path, text, key):
    err = refused(tmp_path, text, "a key must be a string", key)
    assert "site.yaml:" in err


# -- strings that reach XML, files, /etc, apt, ssh, mmdebstrap ---------------------------
@pytest.mark.parametrize("text, words", [
    (container("{}", name='"web\\n"'), ["control character", "'web\\n'"]),
    (container('{description: "red\\e[31m"}'), ["description", "control character"]),
    (container('{hostname: "web\\nevil"}'), ["hostname", "control character"]),
    (container('{hostname: "a b;rm -rf"}'), ["hostname", "not a hostname"]),
    (container('{init: ["/sbin/init\\r"]}'), ["init.0", "control character"]),
    (container('{description: "\\u202eevil"}'), ["description", "\\u202e"]),
    ('settings: {mirror: "[trusted=yes] http://deb.example/debian"}\nhosts: {}\n',
     ["settings.mirror", "trusted=yes"]),
    ('settings: {mirror: "http://deb.example/debian bookworm main contrib"}\nhosts: {}\n',
     ["settings.mirror"]),
    (container('{rootfs: {mirror: "ftp://deb.example/debian"}}'), ["rootfs.mirror"]),
    (container('{rootfs: {mirror: "deb [trusted=yes] http://x/debian bookworm main"}}'),
     ["rootfs.mirror"]),
    (container('{rootfs: {packages: ["--allow-unauthenticated"]}}'), ["packages.0", "Debian"]),
    (container('{rootfs: {packages: ["-oAPT::Get=1"]}}'), ["packages.0"]),
    (container('{rootfs: {packages: ["Apache2"]}}'), ["packages.0"]),
    (container('{rootfs: {suite: "../../etc"}}'), ["rootfs.suite"]),
    (container('{rootfs: {components: ["main contrib"]}}'), ["components.0"]),
    (container('{rootfs: {architecture: "--variant=x"}}'), ["architecture"]),
    ("hosts:\n  local:\n    guests:\n      g: {image: {suite: 'x y'}}\n", ["image.suite"]),
    ("hosts:\n  local:\n    guests:\n      g: {image: {packages: ['-x']}}\n",
     ["image.packages.0"]),
    (container('{ssh_keys: ["command=\\"id\\" ' + KEY + '"]}'), ["ssh_keys.0", "not an ssh"]),
    (container('{ssh_keys: ["' + KEY + '\\n' + KEY + '"]}'), ["ssh_keys.0"]),
    (container('{ssh_keys: ["ssh-ed25519 not-base64!"]}'), ["ssh_keys.0", "base64"]),
    (container('{ssh_keys: ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIB0h5N0s1wh1A6dBUSbXUhQJ9Bwz3uY'
               'tN8X2WcDm3vGq"]}'), ["ssh_keys.0", "not a ssh-rsa key"]),
    (container("{locale: ../../../etc/shadow}"), ["locale", "not a path"]),
    (container("{locale: /usr/lib/locale}"), ["locale"]),
    (container("{timezone: ../../../etc/shadow}"), ["timezone"]),
    (container("{timezone: /etc/localtime}"), ["timezone"]),
    (container("{mounts: [{source: relative, target: /mnt}]}"), ["mounts.0.source"]),
    (container("{mounts: [{source: /srv/../etc, target: /mnt}]}"), ["mounts.0.source"]),
    (container("{rootfs: {path: '/srv/x/../../etc'}}"), ["rootfs.path"]),
    (container("{interfaces: [{network: n, name: 'eth0; x'}]}"), ["interfaces.0.name"]),
    ("hosts:\n  local:\n    guests:\n      g: {machine: '-x'}\n", ["guests.g.machine"]),
    ("hosts:\n  local:\n    guests:\n      g: {boot: {kernel: vmlinuz}}\n", ["boot.kernel"]),
    ("hosts:\n  local:\n    guests:\n      g: {disks: [{path: disk.img}]}\n", ["disks.0.path"]),
    ('name: "a site"\nhosts: {}\n', ["name"]),
    (container("{description: !!binary G1szMW0=}"), ["description", "!!binary"]),
    (container("{init: [!!binary L2Jpbi9zaAo=]}"), ["init.0", "!!binary"]),
    (container("{description: !!set {a, b}}"), ["description", "YAML set"]),
    (container("{description: 2024-01-01}"), ["description", "YAML date"]),
    (container("{init: !!python/object/apply:os.system [id]}"), ["python/object"]),
    (container("{init: !custom [id]}"), ["!custom"]),
])
def test_strings_are_checked_at_load(tmp_path, text, words):
    refused(tmp_path, text, *words)


def test_good_strings_pass(tmp_path):
    inv = _write(tmp_path, f"""\
        settings: {{mirror: "https://deb.example.org/debian", storage_dir: /srv/virtmix}}
        hosts:
          local:
            containers:
              web:
                description: "line one\\nline two"
                hostname: web.example.org
                locale: en_GB.UTF-8
                timezone: America/Argentina/Buenos_Aires
                ssh_keys: ["{KEY}"]
                rootfs: {{suite: trixie, packages: [g++, libstdc++6, nginx-light, "apt=2.6.1"],
                          mirror: "file:///srv/mirror/debian"}}
        """)
    load_site(inv)


def test_validate_refuses_what_apply_would(tmp_path):
    """Once only caught when the tree was built (RootfsSpec, at apply)."""
    refused(tmp_path, container('{rootfs: {packages: ["bad pkg"]}}'), "packages.0")
    refused(tmp_path, container("{locale: 'C.UTF-8/../x'}"), "locale")


# -- storage_dir -------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["/", "/tmp", "/etc", "/usr", "/var", "/proc", "/sys",
                                     "/dev", "/run", "/boot", "/home", "/root", "/var/lib",
                                     "/etc/", "//etc", "/var/lib/../lib/virtmix",
                                     "/srv/v\\tx"])
def test_storage_dir_is_not_a_system_directory(tmp_path, storage):
    refused(tmp_path, f'settings: {{storage_dir: "{storage}"}}\nhosts: {{}}\n',
            "settings.storage_dir")


def test_default_storage_dir_is_valid(tmp_path):
    site = load_site(_write(tmp_path, "hosts: {}\n"))
    assert site.inventory.settings.storage_dir == "/var/lib/virtmix"
    load_site(_write(tmp_path, "settings: {storage_dir: /var/lib/virtmix}\nhosts: {}\n"))


# -- URIs --------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, words", [
    ("qemu+ssh://-oProxyCommand=id/system", ["starting with '-'"]),
    ("qemu+ssh://root@h/system?command=/tmp/evil", ["command="]),
    ("qemu+ssh://root@h/system?socket=/tmp/s", ["socket="]),
    ("qemu+libssh2://root@h/system?netcat=/tmp/nc", ["netcat="]),
])
def test_ssh_uris_that_choose_a_command_are_refused(tmp_path, uri, words):
    text = f'hosts:\n  h:\n    uri: "{uri}"\n'
    refused(tmp_path, text, "hosts.h.uri", "--allow-uri-commands", *words)
    inv = _write(tmp_path, text)
    for args in (["--allow-uri-commands", "validate", str(inv)],
                 ["validate", str(inv), "--allow-uri-commands"]):
        ok = runner.invoke(app, args)
        assert ok.exit_code == 0, ok.stderr
        refused(tmp_path, text, "hosts.h.uri")  # the flag holds for one run only


@pytest.mark.parametrize("uri", ["qemu+ext:///system?command=/tmp/evil", "QEMU+EXT:///system"])
def test_ext_uris_warn_at_validate_and_are_refused_where_virtmix_connects(tmp_path, uri):
    """The ext transport runs its command on connection: validate/render/explain (which never
    connect) warn; plan and apply refuse it unless --allow-uri-commands, then warn."""
    text = f'hosts:\n  h:\n    uri: "{uri}"\n    lxc_uri: "test:///default"\n'
    inv = _write(tmp_path, text)
    for verb in (["validate", str(inv)], ["render", str(inv)]):
        ok = runner.invoke(app, verb)
        assert ok.exit_code == 0, ok.stderr
        assert "warning: hosts.h.uri" in ok.stderr and "'ext' transport" in ok.stderr
    for verb in ("plan", "apply"):
        err = refused(tmp_path, text, "hosts.h.uri", "'ext' transport", "--allow-uri-commands",
                      verb=verb)
        assert "warning" not in err
    allowed = runner.invoke(app, ["--allow-uri-commands", "plan", str(inv), "-o", "json"])
    assert allowed.exit_code == 0, allowed.stderr  # no domain on it: nothing to connect to
    import json

    assert any("'ext' transport" in w for w in json.loads(allowed.stdout)["warnings"])


def test_guest_lxc_uri_is_checked_too(tmp_path):
    refused(tmp_path, 'hosts:\n  h:\n    guests:\n      g: {lxc_uri: "lxc+ssh://-x/system", '
            'containers: {c: {}}}\n', "guests.g.lxc_uri")


# -- site-wide conflicts -----------------------------------------------------------------
NET = "networks:\n  n: {host: local, ipv4: 10.9.0.1/24, dhcp: true}\n"


@pytest.mark.parametrize("text, words", [
    (NET + "hosts:\n  local:\n    containers:\n"
     "      a: {interfaces: [{network: n, mac: '52:54:00:00:00:01'}]}\n"
     "      b: {interfaces: [{network: n, mac: '52:54:00:00:00:01'}]}\n",
     ["site.yaml:7: hosts.local.containers.b.interfaces.0.mac", "MAC", "twice"]),
    (NET + "hosts:\n  local:\n    containers:\n"
     "      a: {interfaces: [{network: n, ipv4: 10.9.0.5/24}]}\n"
     "    guests:\n"
     "      b: {interfaces: [{network: n, ipv4: 10.9.0.5/24}]}\n",
     ["interfaces.0.ipv4", "10.9.0.5 is used twice"]),
    (NET + "hosts:\n  local:\n    containers:\n"
     "      a: {interfaces: [{network: n, ipv4: 10.9.0.1/24}]}\n",
     ["interfaces.0.ipv4", "network 'n''s own"]),
    ("hosts:\n  a:\n    lxc_uri: 'lxc:///'\n    containers: {web: {}}\n"
     "  b:\n    containers: {web: {}}\n", ["hosts.b.containers.web", "used twice"]),
    ("hosts:\n  a:\n    lxc_uri: 'LXC:///system'\n    containers: {web: {}}\n"
     "  b:\n    containers: {web: {}}\n", ["hosts.b.containers.web", "another spelling"]),
    ("networks:\n  n: {host: local, ipv4: 10.9.0.1/24, "
     "dhcp: {start: 10.9.0.200, end: 10.9.0.100}}\nhosts: {local: {}}\n",
     ["networks.n.dhcp", "empty"]),
    ("networks:\n  n: {host: local, ipv4: 10.9.0.1/24, "
     "dhcp: {start: 10.9.1.2, end: 10.9.1.9}}\nhosts: {local: {}}\n",
     ["networks.n.dhcp", "not a host address"]),
    ("networks:\n  n: {host: local, ipv4: 10.9.0.1/24, "
     "dhcp: {start: 10.9.0.0, end: 10.9.0.9}}\nhosts: {local: {}}\n", ["networks.n.dhcp"]),
    ("networks:\n  n: {host: local, ipv4: 10.9.0.1/31, dhcp: true}\nhosts: {local: {}}\n",
     ["networks.n.dhcp", "too small"]),
    ("networks:\n  n: {host: local, ipv4: 10.9.0.255/24}\nhosts: {local: {}}\n",
     ["networks.n.ipv4", "not a host address"]),
    (NET + "hosts:\n  local:\n    containers:\n"
     "      a: {interfaces: [{network: n, ipv4: 10.9.0.0/24}]}\n",
     ["interfaces.0.ipv4", "not a host address"]),
])
def test_site_wide_conflicts(tmp_path, text, words):
    refused(tmp_path, text, *words)


def test_one_mac_on_two_networks_is_fine(tmp_path):
    load_site(_write(tmp_path, """\
        networks:
          n: {host: local, ipv4: 10.9.0.1/24}
          m: {host: local, ipv4: 10.9.1.1/24}
        hosts:
          local:
            containers:
              a: {interfaces: [{network: n, mac: '52:54:00:00:00:01', ipv4: 10.9.0.5/24}]}
              b: {interfaces: [{network: m, mac: '52:54:00:00:00:01', ipv4: 10.9.1.5/24}]}
        """))


# -- all problems at once ----------------------------------------------------------------
def test_every_problem_is_reported_each_with_its_line(tmp_path):
    text = "hosts:\n  local:\n    containers:\n" + "".join(
        f"      c{i}: {{memory: lots, locale: ../x}}\n" for i in range(3))
    err = refused(tmp_path, text)
    for i in range(3):
        assert f"site.yaml:{4 + i}: hosts.local.containers.c{i}.memory" in err
        assert f"site.yaml:{4 + i}: hosts.local.containers.c{i}.locale" in err


def test_cross_entry_problems_are_all_reported(tmp_path):
    text = ("hosts:\n  local:\n    cpus: '0-1'\n    containers:\n"
            "      a: {cpu: {cpuset: '5'}}\n      b: {cpu: {cpuset: '7'}}\n"
            "      c: {interfaces: [{network: nope}]}\n")
    err = refused(tmp_path, text, "site.yaml:5: hosts.local.containers.a.cpu.cpuset",
                  "site.yaml:6: hosts.local.containers.b.cpu.cpuset",
                  "site.yaml:7: hosts.local.containers.c.interfaces.0.network")
    assert err.count("virtmix: error:") == 1


def test_at_most_twenty_problems_are_listed(tmp_path):
    text = "hosts:\n  local:\n    containers:\n" + "".join(
        f"      c{i}: {{vcpus: 0}}\n" for i in range(40))
    err = refused(tmp_path, text, "and 20 more")
    assert err.count("hosts.local.containers.c") == 20


def test_one_problem_keeps_the_single_message_form(tmp_path):
    err = refused(tmp_path, container("{vcpus: 0}"))
    assert err.strip().splitlines()[0].startswith(
        "virtmix: error: ") and "further problems" not in err
    assert f"{tmp_path / 'site.yaml'}:4: hosts.local.containers.web.vcpus" in err


# -- legal but dangerous: warnings -------------------------------------------------------
DANGER = """\
hosts:
  local:
    containers:
      root: {rootfs: {path: /}, privileged: true}
      etc: {rootfs: {path: /usr}, privileged: true}
      rw: {mounts: [{source: /etc, target: /mnt/etc}, {source: /, target: /mnt/root}]}
      ro: {mounts: [{source: /etc, target: /mnt/etc, readonly: true}]}
      s1: {rootfs: {path: /srv/shared}}
      s2: {rootfs: {path: /srv/shared}}
      s3: {rootfs: {path: /srv/shared}, privileged: false}
      thief: {rootfs: {path: /var/lib/virtmix/containers/built/rootfs}, privileged: false}
      built: {}
    guests:
      g: {disks: [{path: /dev/sda}, {path: /home/admin/x.img},
                  {path: /var/lib/virtmix/guests/g/data.qcow2}]}
"""


@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_dangerous_settings_warn(tmp_path, verb):
    inv = _write(tmp_path, DANGER)
    args = [verb, str(inv)] if verb == "validate" else ["plan", str(inv)]
    if verb == "plan":  # plan needs a daemon: the test driver, which has none of these
        text = inv.read_text().replace("  local:\n", "  local:\n    uri: 'test:///default'\n"
                                       "    lxc_uri: 'test:///default'\n", 1)
        inv.write_text(text)
    result = runner.invoke(app, args)
    err = result.stderr
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("virtmix: warning: ")]
    text = "\n".join(warnings)
    assert "containers.root.rootfs.path" in text and "system directory" in text
    assert "containers.etc.rootfs.path" in text
    assert "containers.rw.mounts[0].source: /etc is mounted read-write" in text
    assert "containers.rw.mounts[1].source: / is mounted read-write" in text
    assert "containers.ro.mounts" not in text
    assert "privileged containers s1, s2 share one tree (/srv/shared)" in text
    assert "s3" not in text.split("share one tree")[0].rsplit("\n", 1)[-1]
    assert "containers.thief.rootfs.path" in text and "container built" in text
    assert "guests.g.disks[0].path" in text and "block device /dev/sda" in text
    assert "guests.g.disks[1].path" in text and "outside virtmix's storage" in text
    assert "disks[2]" not in text


def test_validate_json_carries_the_warnings(tmp_path):
    import json

    inv = _write(tmp_path, "hosts:\n  local:\n    containers:\n"
                 "      a: {rootfs: {path: /}, privileged: true}\n")
    result = runner.invoke(app, ["validate", str(inv), "-o", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert any("system directory" in w for w in data["warnings"])


def test_a_plain_inventory_has_no_warnings(tmp_path):
    site = load_site(_write(tmp_path, container("{}")))
    assert site.warnings == []


@pytest.mark.parametrize("text", [
    "hosts:\n  local:\n    containers:\n      web:\n        ? " + "k" * 1_000_000
    + "\n        : 1\n",
    "name: " + "n" * 3_000_000 + "\nhosts: {}\n",
    container("{memory: '" + "9" * 100_000 + "MiB'}"),
    container("{cpu: {cpuset: '" + "1," * 20_000 + "1'}}"),
])
def test_huge_keys_and_values_are_refused_quickly_with_short_messages(tmp_path, text):
    err = refused(tmp_path, text)
    assert len(err) < 2000


def test_plan_json_carries_the_warnings_and_keeps_stderr_quiet(tmp_path):
    import json

    inv = _write(tmp_path, "hosts:\n  local:\n    uri: 'test:///default'\n"
                 "    lxc_uri: 'test:///default'\n    containers:\n"
                 "      a: {rootfs: {path: /}, privileged: true}\n")
    result = runner.invoke(app, ["plan", str(inv), "-o", "json"])
    assert "warning" not in result.stderr
    data = json.loads(result.stdout)
    assert any("system directory" in w for w in data["warnings"])


def test_many_networks_and_entries_render_in_linear_time(tmp_path):
    """Each network's DHCP hosts came from a scan of every entry: 1,000 networks and 10,000
    containers took ~10 s; one index per site keeps it linear."""
    from virtmix.render.templates import render_all

    lines = ["networks:"] + [f"  n{n}: {{host: h, ipv4: 10.{n // 250}.{n % 250}.1/24, "
                             "dhcp: true}" for n in range(1000)]
    lines += ["hosts:", "  h:", "    containers:"] + [
        f"      c{c}: {{interfaces: [{{network: n{c % 1000}, "
        f"ipv4: 10.{c % 1000 // 250}.{c % 1000 % 250}.{10 + c // 1000}/24}}]}}"
        for c in range(10000)]
    site = load_site(_write(tmp_path, "\n".join(lines) + "\n"))
    t0 = time.process_time()
    docs = render_all(site, check=False, workers=1)
    assert time.process_time() - t0 < 4.0
    net0 = next(d for d in docs if d.address == "n0")
    assert net0.xml.count("<host mac=") == 10
