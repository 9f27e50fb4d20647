"""Shell completion through typer's completion protocol, in a subprocess as a shell runs it:
domain names (test driver, 500 domains), GUEST/NAME and host names from the inventory,
cgroup keys, profile names; bash, zsh and fish formats; and the 200 ms budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from virtmix.cli import complete

MAIN = [sys.executable, "-c", "from virtmix.cli import main; main()"]
TYPER_ONLY = [sys.executable, "-c", "from virtmix.cli import app; app(prog_name='virtmix')"]


@pytest.fixture(scope="module")
def node500(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("node") / "node.xml"
    doms = "".join(f"<domain type='test'><name>web-{i:03d}</name><memory>65536</memory>"
                   f"<os><type>hvm</type></os></domain>" for i in range(500))
    path.write_text(f"<node>{doms}</node>")
    return f"test://{path}"


@pytest.fixture
def inventory(tmp_path, node500) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "edge-proxy.yaml").write_text("kind: container\n")
    doc = {"name": "comp", "profiles_dir": "profiles", "hosts": {
        "hv1": {"uri": node500, "lxc_uri": node500, "guests": {
            "g1": {"containers": {"inner1": {}, "inner2": {}}}}},
        "hv2": {"uri": node500}}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bash(line: str, argv: list[str] = MAIN, **env: str) -> tuple[list[str], float]:
    words = line.split(" ")
    full = {**os.environ, "_VIRTMIX_COMPLETE": "complete_bash", "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1), "VIRTMIX_COMPLETE_TIMEOUT": "5", **env}
    full.pop("VIRTMIX_INVENTORY", None) if "VIRTMIX_INVENTORY" not in env else None
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=full, timeout=60)
    took = time.perf_counter() - t0
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.split(), took


def test_domain_names_from_the_connection(node500):
    words, _ = bash(f"virtmix -c {node500} start web-49")
    assert words == [f"web-49{i}" for i in range(10)]
    words, _ = bash(f"virtmix --connect={node500} cgroup web-00")
    assert len(words) == 10 and all(w.startswith("web-00") for w in words)
    words, _ = bash(f"virtmix -c {node500} info -o json web-12")  # after an option's value
    assert words[0] == "web-120"


def test_nested_addresses_and_hosts_from_the_inventory(inventory, node500):
    words, _ = bash(f"virtmix -i {inventory} stop g1/")
    assert words == ["g1/inner1", "g1/inner2"]
    words, _ = bash("virtmix stop g1/", VIRTMIX_INVENTORY=str(inventory))
    assert words == ["g1/inner1", "g1/inner2"]
    words, _ = bash(f"virtmix -i {inventory} stop web-49")  # the inventory hosts' domains
    assert len(words) == 10
    words, _ = bash(f"virtmix render {inventory} --host hv")
    assert words == ["hv1", "hv2"]


def test_cgroup_keys_and_profiles(inventory):
    words, _ = bash("virtmix cgroup web-001 memory.")
    assert "memory.limit_in_bytes" in words and "memory.max" in words
    assert all(w.startswith("memory.") for w in words)
    assert complete.candidates(["--inventory", str(inventory), "create", "x", "--profile"],
                               "edge", {}) == ["edge-proxy"]
    assert "debian" in complete.candidates(["create", "--profile"], "", {})


def test_zsh_and_fish_formats(node500):
    env = {**os.environ, "_VIRTMIX_COMPLETE": "complete_zsh",
           "_TYPER_COMPLETE_ARGS": f"virtmix -c {node500} freeze web-49"}
    out = subprocess.run(MAIN, capture_output=True, text=True, env=env).stdout
    assert out.startswith("_arguments '*: :((\"web-490\"") and '"web-499"))\'' in out
    env |= {"_VIRTMIX_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    out = subprocess.run(MAIN, capture_output=True, text=True, env=env).stdout
    assert out.split() == [f"web-49{i}" for i in range(10)]
    env["_TYPER_COMPLETE_FISH_ACTION"] = "is-args"
    assert subprocess.run(MAIN, capture_output=True, env=env).returncode == 0


def test_typer_path_completes_the_same(node500):
    """Without main()'s fast path (typer resolving the whole app) the answers agree."""
    fast, _ = bash(f"virtmix -c {node500} start web-49")
    slow, _ = bash(f"virtmix -c {node500} start web-49", argv=TYPER_ONLY)
    assert slow == fast
    slow, _ = bash("virtmix cgroup web-001 cpu.c", argv=TYPER_ONLY)
    assert sorted(slow) == ["cpu.cfs_period_us", "cpu.cfs_quota_us"]


def test_verbs_still_complete():
    words, _ = bash("virtmix sta")
    assert words == ["start"]


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - t0


def test_real_bash_with_the_installed_script(node500, tmp_path):
    """The script `--show-completion bash` prints, sourced in bash, fills COMPREPLY."""
    import shutil

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "virtmix").exists() or not shutil.which("bash"):
        pytest.fail("needs the venv's virtmix script and bash (make venv)")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SHELL": "/bin/bash"}
    shown = subprocess.run([str(bin_dir / "virtmix"), "--show-completion", "bash"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    script = shown.stdout
    (tmp_path / "complete.bash").write_text(script)
    line = (f"source {tmp_path / 'complete.bash'}; COMP_WORDS=(virtmix -c {node500} start "
            "web-49); COMP_CWORD=4; _virtmix_completion virtmix; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "--norc", "-c", line], capture_output=True, text=True,
                         env=env, timeout=60).stdout
    assert out.split() == [f"web-49{i}" for i in range(10)]


@pytest.mark.parametrize("args, first", [(["--show-completion", "zsh"], "#compdef virtmix"),
                                         (["--show-completion=fish"], "complete --command"),
                                         (["--show-completion", "bash"], "_virtmix_completion")])
def test_a_named_shell_gets_its_script_whatever_shell_runs_virtmix(args, first):
    """The shell named is the script printed, also under `sh -c` (make, CI): typer's own
    detection reads the process tree and refused sh, or printed the parent shell's script."""
    import shlex

    virtmix = Path(sys.executable).parent / "virtmix"
    if not virtmix.exists():
        pytest.fail("needs the venv's virtmix script (make venv)")
    res = subprocess.run(["sh", "-c", shlex.join([str(virtmix), *args])], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.lstrip().startswith(first), res.stdout[:200]
