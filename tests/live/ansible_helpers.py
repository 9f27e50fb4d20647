"""Running the real Ansible (installed by the test extra) against what virtmix made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "site_play.yml"


def tool(name: str) -> str:
    """ansible-playbook etc. from the venv that runs the tests (never a system copy)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{path} missing: install the test extra (pip install -e '.[test]')"
    return str(path)


def env() -> dict[str, str]:
    """The collection from this checkout; virtmix importable by Ansible's Python."""
    out = dict(os.environ)
    out.update({
        "ANSIBLE_COLLECTIONS_PATH": str(REPO),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH")) if p),
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": "/tmp/vmixt-ansible-tmp",
    })
    out.pop("LIBVIRT_DEFAULT_URI", None)
    return out


def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(argv[0]), *argv[1:]], capture_output=True, text=True,
                          env=env(), timeout=timeout, cwd=REPO)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: host -> {ok, changed, unreachable, failed, ...}."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def local_repo(dest: Path, *packages: str) -> Path:
    """An apt repository (file:) with packages fetched through the host's apt sources."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    # _apt cannot write into a root-owned test dir: apt then downloads as root (a warning)
    subprocess.run(["apt-get", "download", "-q", *packages], cwd=dest, check=True,
                   capture_output=True, text=True, timeout=300)
    assert shutil.which("dpkg-scanpackages"), "dpkg-scanpackages missing (dpkg-dev)"
    index = subprocess.run(["dpkg-scanpackages", "."], cwd=dest, check=True,
                           capture_output=True, text=True).stdout
    (dest / "Packages").write_text(index)
    for p in dest.iterdir():
        p.chmod(0o644)
    return dest
