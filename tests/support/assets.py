"""Build the test assets (busybox trees, guest kernel + initrd) with the repo's scripts."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


@dataclass(frozen=True)
class GuestKernel:
    """A kernel and busybox initrd for direct kernel boot; /init prints MARKER on ttyS0."""

    vmlinuz: Path
    initrd: Path
    MARKER = "VIRTMIX-GUEST-UP"
    # Appended to <cmdline>: the initrd powers the guest off right after the marker.
    POWEROFF_ARG = "virtmix.poweroff"


def _run_script(name: str, *args: str) -> str:
    """Run scripts/NAME, failing the test with the script's own output when it fails."""
    proc = subprocess.run(
        ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/{name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def build_busybox_tree(dest: Path, shift: int | None = None) -> Path:
    """Build a busybox root tree at dest; shift=BASE chowns it for <idmap> target BASE."""
    args = ["--shift", str(shift)] if shift is not None else []
    _run_script("make-busybox-rootfs.sh", *args, str(dest))
    return dest


def fetch_guest_kernel(dest: Path) -> GuestKernel:
    """Put vmlinuz and initrd.img into dest (kernel cached under /var/cache/virtmix-test)."""
    _run_script("fetch-guest-kernel.sh", str(dest))
    kernel = GuestKernel(vmlinuz=dest / "vmlinuz", initrd=dest / "initrd.img")
    for path in (kernel.vmlinuz, kernel.initrd):
        if not path.is_file() or path.stat().st_size == 0:
            raise RuntimeError(f"scripts/fetch-guest-kernel.sh did not produce {path}")
    return kernel
