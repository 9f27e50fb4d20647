"""attach/execute speak in virtmix's words: a broken init pid and a missing command never
reach nsenter (issue 14: `nsenter: no target PID specified for --all`)."""

from __future__ import annotations

import os

import pytest

from virtmix.admin import namespaces
from virtmix.errors import CommandNotExecutableError, CommandNotFoundError, StateError


@pytest.mark.parametrize("pid", [0, 2**22 + 12345])  # unknown yet / gone
def test_an_unusable_init_pid_is_a_state_error(monkeypatch, pid):
    monkeypatch.setattr(namespaces, "init_pid", lambda name, ctl: pid)
    ran = []
    monkeypatch.setattr(namespaces, "run_relayed", lambda *a, **k: ran.append(a) or 0)
    with pytest.raises(StateError, match="init process is not known yet or is gone"):
        namespaces.run_inside("ux-web", 42, ["true"])
    assert ran == []  # nsenter never started


def test_command_lookup_in_the_containers_root_answers_like_a_shell():
    me = os.getpid()  # /proc/<me>/root is / here; the container's root in real use
    env = {"PATH": namespaces.CONTAINER_PATH}
    namespaces.check_command(me, "ux-web", ["sh", "-c", "true"], env)
    namespaces.check_command(me, "ux-web", [], env)  # the default /bin/sh
    with pytest.raises(CommandNotFoundError, match="^nosuchcmd: command not found in ux-web$"):
        namespaces.check_command(me, "ux-web", ["nosuchcmd"], env)
    with pytest.raises(CommandNotFoundError) as exc:
        namespaces.check_command(me, "ux-web", ["/no/such/thing"], env)
    assert exc.value.exit_code == 127
    with pytest.raises(CommandNotExecutableError) as exc:
        namespaces.check_command(me, "ux-web", ["/etc/passwd"], env)
    assert exc.value.exit_code == 126
