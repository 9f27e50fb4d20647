"""Global options (-c, -i, --quiet, --debug) work after the verb on every verb, the same as
before it; nothing after `--` or in attach/execute's command moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtmix.cli import VERBS, app
from virtmix.cli.base import OPTIONS, hoist_global_options

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "site.yaml")
T = "test:///default"

# One command line per verb (the words after the verb); each must behave the same with
# the global options before the verb and after its words.
COMMANDS = {
    "validate": [EXAMPLE], "render": [EXAMPLE, "--name", "vm0"], "schema": [],
    "explain": [EXAMPLE, "vm0"], "plan": ["nope.yaml"], "apply": ["nope.yaml", "--yes"],
    "destroy": ["nope", "--yes"], "create": ["nope-c", "--template", "nosuch"],
    "ls": [], "info": ["nope"], "start": ["nope"], "stop": ["nope"], "freeze": ["nope"],
    "unfreeze": ["nope"], "console": ["nope"], "cgroup": ["nope", "cpu.shares"],
    "ps": ["nope"], "attach": ["nope"], "execute": ["--", "true"],
    "import": ["--name", "nope"], "doctor": ["-o", "json"], "image": ["ls"],
    "inventory": ["ansible", EXAMPLE], "rootfs": ["ls"],
    "snapshot": ["nope", "--name", "s1"], "backup": ["nope", "--to", "/nonexistent"],
    "restore": ["nope.vmxbak.tar"], "metrics": ["--listen", "nope"],
    "watch": ["--count", "0", "--timeout", "0.1"], "move": ["nope", "--to", "h2"],
}


def test_every_verb_has_a_command_line_here():
    assert set(COMMANDS) == set(VERBS)


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_global_options_after_the_verb_mean_the_same(verb, tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTMIX_STORAGE", str(tmp_path / "storage"))
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    runner = CliRunner()
    words = COMMANDS[verb]
    before = runner.invoke(app, ["-c", T, "--quiet", verb, *words])
    seen_before = OPTIONS.quiet, OPTIONS.connect
    cut = words.index("--") if "--" in words else len(words)  # after `--`: the command's
    after = runner.invoke(app, [verb, *words[:cut], "-c", T, "--quiet", *words[cut:]])
    seen_after = OPTIONS.quiet, OPTIONS.connect
    assert seen_before == seen_after == (True, T)
    assert after.exit_code == before.exit_code, (after.output, before.output)
    assert after.stdout == before.stdout


def test_cgroup_does_not_take_quiet_as_the_value_to_set():
    r = CliRunner().invoke(app, ["cgroup", "nope", "cpu.shares", "--quiet", "-c", T])
    assert r.exit_code == 6, r.output  # no domain named nope, not "set to --quiet"
    assert "no domain named 'nope'" in r.output


@pytest.mark.parametrize(("argv", "want"), [
    (["cgroup", "c1", "cpu.shares", "--quiet"], ["--quiet", "cgroup", "c1", "cpu.shares"]),
    (["ls", "-c", "lxc:///system", "-o", "json"], ["-c", "lxc:///system", "ls", "-o", "json"]),
    (["attach", "c1", "ps", "-q"], ["attach", "c1", "ps", "-q"]),
    (["attach", "c1", "-q", "--", "ps", "-q"], ["-q", "attach", "c1", "--", "ps", "-q"]),
    (["execute", "--rootfs", "/x", "-q", "--", "sh"],
     ["-q", "execute", "--rootfs", "/x", "--", "sh"]),
    (["execute", "ls", "-q"], ["execute", "ls", "-q"]),
    (["rootfs", "build", "-q", "--suite", "x"], ["-q", "rootfs", "build", "--suite", "x"]),
    (["apply", "s.yaml", "--yes", "--debug", "--connect=qemu:///system"],
     ["--debug", "--connect=qemu:///system", "apply", "s.yaml", "--yes"]),
])
def test_hoisting(argv, want):
    assert hoist_global_options(argv) == want
