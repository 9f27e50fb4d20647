"""`virtmix VERB` imports only VERB's module (virtmix.cli.main): the table it uses must
match what the modules register, and the verb must be found behind global options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from virtmix import cli


def test_every_registered_verb_is_in_the_table_with_its_module():
    app = cli.load()
    seen = {}
    for info in app.registered_commands:
        seen[info.name or info.callback.__name__] = info.callback.__module__.rsplit(".", 1)[1]
    for group in app.registered_groups:
        seen[group.name] = group.typer_instance.registered_commands[0].callback.__module__ \
            .rsplit(".", 1)[1]
    assert seen == cli.VERBS


@pytest.mark.parametrize("argv, verb", [
    (["plan", "x.yaml"], "plan"),
    (["-c", "qemu:///system", "ls"], "ls"),
    (["--connect=lxc:///system", "-q", "--debug", "-i", "site.yaml", "info", "a"], "info"),
    (["--help"], None), ([], None), (["--install-completion"], None),
    (["-x", "ls"], None),  # an option virtmix does not have: load everything, let typer say
])
def test_verb_of(argv, verb):
    assert cli.verb_of(argv) == verb


def test_a_verb_imports_only_its_module():
    code = ("import sys; sys.argv = ['virtmix', 'schema']; from virtmix import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules "
            "if m.startswith('virtmix.cli.') and m.endswith('_cmds')), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "['inventory_cmds']"
    assert '"$schema"' in res.stdout or '"properties"' in res.stdout
