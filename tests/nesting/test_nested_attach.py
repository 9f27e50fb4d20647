"""attach over ssh (nested containers): the command check the guest runs before nsenter."""

from __future__ import annotations

import subprocess

import pytest

from virtmix.nesting.ops import _command_check_sh


@pytest.mark.parametrize(("word", "code"), [
    ("sh", "0"), ("/bin/sh", "0"), ("nosuchcmd", "127"), ("/no/such", "127"),
    ("/etc/passwd", "126"), ("/etc", "126"), ("it's; rm -rf x", "127"),
])
def test_the_guest_side_check_answers_like_a_shell(word, code):
    # $pid is this shell: /proc/$pid/root is / here, the container's root in the guest.
    script = "pid=$$; " + _command_check_sh("c1", word)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == code
