"""Benchmark: from `apply` to two containers running inside a guest, broken down.

1. Breakdown, step by step with virtmix's own functions (what apply runs, timed apart):
   image (build, or cache hit), guest files (overlay, kernel, initrd, keys), network +
   define + start, guest boot (sshd answers on port 22), guest libvirt answering (through
   libvirt's ssh transport), containers defined and started inside it.
2. The same inventory through `virtmix apply` as one command (the total an admin sees).

Run as root on a host prepared by scripts/setup-host.sh:
`python benchmarks/nesting_bench.py [--rebuild]` (--rebuild drops the cached image first,
to time a build). Everything is named vmixt-nest-bench* and removed at the end; the image
cache under the storage directory is kept.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtmix.backend import open_connection  # noqa: E402
from virtmix.images import ensure_image, prepare_guest, remove_guest_files  # noqa: E402
from virtmix.images.recipe import BUSYBOX_TREE  # noqa: E402
from virtmix.images.spec import spec_from_model  # noqa: E402
from virtmix.inventory.load import load_site  # noqa: E402
from virtmix.nesting.guests import wait_for_guest_libvirt  # noqa: E402
from virtmix.render.templates import render_domain, render_network  # noqa: E402
from virtmix.rootfs.storage import Storage  # noqa: E402

NAME = "vmixt-nest-bench"
STORAGE = Path("/var/tmp/vmixt-nest-storage")
ADDRESS = "10.213.73.10"
VIRTMIX = str(Path(sys.executable).parent / "virtmix")
SITE = f"""\
name: {NAME}
settings: {{storage_dir: {STORAGE}}}
networks:
  {NAME}-net: {{host: hv, mode: isolated, bridge: vmixtnest3, ipv4: 10.213.73.1/24}}
hosts:
  hv:
    virt_type: qemu
    guests:
      {NAME}-g:
        vcpus: 2
        memory: 768MiB
        interfaces: [{{network: {NAME}-net, ipv4: {ADDRESS}/24}}]
        containers:
          {NAME}-c1: {{rootfs: {{path: {BUSYBOX_TREE}}}, cpu: {{cpuset: "0", shares: 512}},
                      init: [/bin/sh, -c, "while :; do sleep 3600; done"], memory: 64MiB}}
          {NAME}-c2: {{rootfs: {{path: {BUSYBOX_TREE}}}, cpu: {{cpuset: "1", shares: 2048}},
                      init: [/bin/sh, -c, "while :; do sleep 3600; done"], memory: 64MiB}}
"""


def cleanup(site) -> None:
    """Remove the bench's domains, network and guest files (by name)."""
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "destroy", f"{NAME}-g"],
                   capture_output=True)
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "undefine", f"{NAME}-g"],
                   capture_output=True)
    for verb in ("net-destroy", "net-undefine"):
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", verb, f"{NAME}-net"],
                       capture_output=True)
    remove_guest_files(site, f"{NAME}-g")


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"nesting_bench: timed out waiting for {what}")
        time.sleep(0.2)


def ssh_port_open() -> bool:
    try:
        with socket.create_connection((ADDRESS, 22), timeout=1) as s:
            return s.recv(4).startswith(b"SSH")
    except OSError:
        return False


def breakdown(site, rebuild: bool) -> dict[str, float]:
    guest = site.find(f"{NAME}-g")
    marks: dict[str, float] = {}
    spec = spec_from_model(guest.spec.image)
    if rebuild:
        shutil.rmtree(STORAGE / "images" / spec.cache_key, ignore_errors=True)
    t = time.monotonic()
    img = ensure_image(spec, Storage(STORAGE))
    marks["image build" if not img.cached else "image (cache hit)"] = time.monotonic() - t
    t = time.monotonic()
    prepare_guest(site, guest)
    marks["guest files (overlay, kernel, initrd, keys)"] = time.monotonic() - t
    t = time.monotonic()
    with open_connection("qemu:///system") as qemu:
        qemu.define_network(render_network(site, f"{NAME}-net"))
        qemu.start_network(f"{NAME}-net")
        qemu.define(render_domain(site, guest))
        qemu.start(guest.name)
    marks["network + define + start"] = time.monotonic() - t
    t = time.monotonic()
    wait(ssh_port_open, 300, "the guest's sshd")
    marks["guest boot (sshd answers)"] = time.monotonic() - t
    t = time.monotonic()
    conn = wait_for_guest_libvirt(site, guest.name, site.children(guest.name)[0].uri,
                                  timeout=300, interval=0.5)
    marks["guest libvirt answering (ssh transport)"] = time.monotonic() - t
    t = time.monotonic()
    with conn:
        for c in site.children(guest.name):
            conn.define(render_domain(site, c))
            conn.start(c.name)
        wait(lambda: all(conn.get(c.name).state == "running"
                         for c in site.children(guest.name)), 60, "the containers")
    marks["2 containers defined + started"] = time.monotonic() - t
    return marks


def whole_apply(path: Path) -> tuple[float, str]:
    t = time.monotonic()
    res = subprocess.run([VIRTMIX, "apply", str(path), "--yes"], capture_output=True,
                         text=True, timeout=900)
    took = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"nesting_bench: virtmix apply failed:\n{res.stdout}{res.stderr}")
    return took, res.stdout


def main() -> None:
    rebuild = "--rebuild" in sys.argv[1:]
    tmp = Path(tempfile.mkdtemp(prefix="vmixt-nest-bench-"))
    path = tmp / "site.yaml"
    path.write_text(SITE)
    site = load_site(path)
    cleanup(site)
    try:
        marks = breakdown(site, rebuild)
        cleanup(site)
        total, _out = whole_apply(path)
    finally:
        cleanup(site)
        shutil.rmtree(tmp, ignore_errors=True)
    print("nesting_bench: LXC containers inside a TCG guest, from apply to running")
    for what, secs in marks.items():
        print(f"  {what:<45} {secs:7.1f} s")
    print(f"  {'sum of the steps':<45} {sum(marks.values()):7.1f} s")
    print(f"  {'virtmix apply (one command, image cached)':<45} {total:7.1f} s")


if __name__ == "__main__":
    main()
