"""Helpers of the plan/apply/destroy live tests: inventories, the CLI as a process, cgroups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

PFX = "vmixt-apply-"
REPO = Path(__file__).resolve().parents[2]


def make_storage_dir() -> Path:
    """A storage dir under /var/tmp whose parents an idmap container's root can traverse."""
    path = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def remove_storage_dir(path: Path) -> None:
    """The storage dir and all in it, with what a failed test left mounted there (a
    container's overlay): rmtree alone stops at a mount and leaves it on the host."""
    from virtmix.rootfs.storage import mounts_below

    if path.exists():
        for mnt in sorted(mounts_below(path.resolve()), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mnt], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def busybox(tree: Path, **extra) -> dict:
    """An inventory container on an existing busybox tree."""
    return {"rootfs": {"path": str(tree)}, "memory": "64MiB", **extra}


def write_inventory(storage: Path, hosts: dict, *, name: str | None = None,
                    networks: dict | None = None, file: str = "site.yaml") -> Path:
    # The site's name is its owner mark on the daemon (plan lists, prune removes, the
    # site's other domains): one per calling module, so modules running beside each other
    # on the suite's workers never see each other's domains as their site's.
    if name is None:
        module = sys._getframe(1).f_globals["__name__"].rpartition(".")[2]
        name = "vmixt-site-" + module.removeprefix("test_").replace("_", "-")
    doc = {"name": name, "settings": {"storage_dir": str(storage)},
           "networks": networks or {}, "hosts": hosts}
    path = storage / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def lxc_host(containers: dict, **extra) -> dict:
    return {"uri": "qemu:///system", "lxc_uri": "lxc:///system", "virt_type": "qemu",
            "containers": containers, **extra}


def virtmix_argv(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "virtmix"
    base = [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "from virtmix.cli import main; main()"]
    return base + list(args)


def virtmix(*args: str, timeout: float = 300, check: int | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run the virtmix CLI as an admin would; check=N asserts the exit code."""
    env = dict(os.environ)
    env.pop("LIBVIRT_DEFAULT_URI", None)
    proc = subprocess.run(virtmix_argv(*args), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)
    if check is not None:
        assert proc.returncode == check, (
            f"virtmix {' '.join(args)} exited {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cgroup_dir(controller: str, domain_id: int) -> Path:
    """A running container's cgroup for controller, from its libvirt_lxc process."""
    for line in Path(f"/proc/{domain_id}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}")
    raise LookupError(f"no {controller} cgroup for pid {domain_id}")


def names_with_prefix(conn, prefix: str = PFX) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix))
