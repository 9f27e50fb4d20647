"""Helpers of the admin-verb live tests: the CLI and virsh as processes, cgroup files, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PFX = "vmixt-admin-"
REPO = Path(__file__).resolve().parents[2]
LXC = "lxc:///system"
QEMU = "qemu:///system"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("LIBVIRT_DEFAULT_URI", "VIRTMIX_INVENTORY"):
        env.pop(var, None)
    return env


def virtmix_argv(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "virtmix"
    base = [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "from virtmix.cli import main; main()"]
    return base + list(args)


def vm(*args: str, check: int | None = 0, timeout: float = 120, input: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run the virtmix CLI as an admin would; check=N asserts the exit code (None: don't)."""
    proc = subprocess.run(virtmix_argv(*args), capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=REPO, input=input)
    if check is not None:
        assert proc.returncode == check, (
            f"virtmix {' '.join(args)} exited {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def virsh(uri: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=120, env=_env())
    if check:
        assert proc.returncode == 0, f"virsh {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def domstate(uri: str, name: str) -> str:
    return virsh(uri, "domstate", name).strip()


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *phrases: str
                       ) -> None:
    """A documented exit code, the phrases in the message, and no traceback."""
    assert proc.returncode == code, (
        f"exit {proc.returncode}, expected {code}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr}")
    assert "Traceback" not in proc.stderr + proc.stdout
    # Warnings may come first: a name is looked for in every place virtmix knows, guests that
    # host containers included, and one that does not answer is named (e.g. a guest of
    # another test, running beside this one).
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    while lines and lines[0].startswith(("virtmix: warning: ", "  ")):
        lines.pop(0)
    assert lines and lines[0].startswith("virtmix: error: "), proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, f"{phrase!r} not in {proc.stderr!r}"


def cgroup_file(controller: str, domain_id: int, filename: str) -> Path:
    """A running domain's cgroup file, found from its libvirt_lxc / qemu process."""
    for line in Path(f"/proc/{domain_id}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}") / filename
    raise LookupError(f"no {controller} cgroup for pid {domain_id}")


def domain_id(uri: str, name: str) -> int:
    return int(virsh(uri, "domid", name).strip())


def inactive_xml(uri: str, name: str) -> str:
    return virsh(uri, "dumpxml", "--inactive", name)
