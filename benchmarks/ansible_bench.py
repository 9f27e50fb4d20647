"""Benchmark the Ansible hand-off: one playbook of ten ordinary tasks on N built containers
(default 20), through `virtmix inventory ansible` (connection virtmix.site.lxc: nsenter into
each container) beside the same playbook over ssh into the same containers (sshd in each,
a key of the benchmark's own, Ansible's default ssh with ControlPersist and pipelining).

Each way runs twice: the first run changes things, the second finds nothing to do.
Run as root on a host prepared by scripts/setup-host.sh, with Ansible installed in the
Python that runs this (pip install -e '.[test]'):

    python benchmarks/ansible_bench.py [--count N] [--keep]

Containers and the network are named vmixt-abench-* and removed at the end (trees too).
The storage is the rootfs tests' shared one (VIRTMIX_TEST_ROOTFS_DIR), so the Debian tree
(python3, python3-apt, openssh-server) is built once per machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STORAGE = Path(os.environ.get("VIRTMIX_TEST_ROOTFS_DIR", "/var/tmp/virtmix-test-rootfs")) / "shared"
PFX = "vmixt-abench-"
NET = "10.213.80"

PLAYBOOK = """
- hosts: bench
  gather_facts: false
  tasks:
    - {name: whoami, command: id -u, changed_when: false}
    - {name: a file, copy: {dest: /root/bench.txt, content: "bench\\n", mode: "0600"}}
    - {name: a template, template: {src: bench.j2, dest: /etc/bench.conf}}
    - {name: a directory, file: {path: /srv/bench, state: directory, mode: "0755"}}
    - {name: a line, lineinfile: {path: /etc/bench.conf, line: "extra = 1"}}
    - {name: a stat, stat: {path: /etc/hostname}}
    - {name: a user, user: {name: bench, uid: 1600, shell: /bin/sh}}
    - {name: a package (installed already), apt: {name: python3, state: present}}
    - {name: a service, systemd: {name: systemd-journald, state: started}}
    - {name: a command, command: cat /etc/bench.conf, changed_when: false}
"""


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update({"ANSIBLE_COLLECTIONS_PATH": str(REPO), "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH"))
                                              if p)})
    out.pop("LIBVIRT_DEFAULT_URI", None)
    return out


def run(argv: list[str], *, cwd: Path, timeout: float = 1800) -> float:
    t0 = time.monotonic()
    res = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True,
                         timeout=timeout)
    took = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout[-3000:]}"
                 f"\n{res.stderr[-2000:]}")
    failed = re.findall(r"failed=(\d+)", res.stdout)
    if "ansible-playbook" in argv[0] and (not failed or any(int(f) for f in failed)):
        sys.exit(f"{' '.join(argv)}: failures\n{res.stdout[-3000:]}")
    return took


def site(work: Path, count: int) -> Path:
    key = (work / "key.pub").read_text().strip()
    containers = {
        f"{PFX}{i:02d}": {"profile": "ansible", "memory": "256MiB", "sshd": True,
                          "ssh_keys": [key],
                          "interfaces": [{"network": f"{PFX}net", "ipv4": f"{NET}.{10 + i}/24"}]}
        for i in range(count)}
    doc = {"name": "vmixt-abench", "settings": {"storage_dir": str(STORAGE)},
           "networks": {f"{PFX}net": {"host": "hv1", "bridge": "vmixtab0",
                                      "ipv4": f"{NET}.1/24"}},
           "hosts": {"hv1": {"virt_type": "qemu", "containers": containers}}}
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ssh_inventory(work: Path, count: int) -> Path:
    hosts = {f"{PFX}{i:02d}": {"ansible_host": f"{NET}.{10 + i}"} for i in range(count)}
    doc = {"bench": {"hosts": hosts, "vars": {
        "ansible_user": "root", "ansible_ssh_private_key_file": str(work / "key"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3"}}}
    path = work / "ssh.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="leave the containers")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix=PFX, dir="/var/tmp"))
    work.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")],
                   check=True)
    (work / "play.yml").write_text(PLAYBOOK)
    (work / "bench.j2").write_text("# {{ inventory_hostname }}\nname = {{ inventory_hostname }}\n")
    inv = site(work, args.count)
    vm = [str(BIN / "virtmix")]
    try:
        t_apply = run([*vm, "apply", str(inv), "--yes"], cwd=work)
        run([*vm, "inventory", "ansible", str(inv), "--out", str(work / "export.yml")],
            cwd=work)
        # The export's group of containers, under the playbook's group name.
        export = yaml.safe_load((work / "export.yml").read_text())
        export["all"]["children"]["bench"] = {"children": {"virtmix_containers": {}}}
        (work / "export.yml").write_text(yaml.safe_dump(export, sort_keys=False))
        ssh_inv = ssh_inventory(work, args.count)
        time.sleep(5)  # let every container's sshd come up
        forks = ["-f", str(args.count)]
        figures = {}
        for label, inventory in (("virtmix.site.lxc (export)", work / "export.yml"),
                                 ("ssh", ssh_inv)):
            first = run([str(BIN / "ansible-playbook"), "-i", str(inventory), *forks,
                         "play.yml"], cwd=work)
            second = run([str(BIN / "ansible-playbook"), "-i", str(inventory), *forks,
                          "play.yml"], cwd=work)
            figures[label] = (first, second)
        # ssh ran second on already-changed containers: run the export once more so both
        # have an idempotent figure measured after the other.
        again = run([str(BIN / "ansible-playbook"), "-i", str(work / "export.yml"), *forks,
                     "play.yml"], cwd=work)
        print(f"ansible_bench: {args.count} containers, 10 tasks, forks={args.count}")
        print(f"  apply ({args.count} built containers, tree cached): {t_apply:6.1f} s")
        for label, (first, second) in figures.items():
            print(f"  {label:28s} first run {first:6.1f} s   second run {second:6.1f} s")
        print(f"  virtmix.site.lxc third run (after ssh's) {again:6.1f} s")
    finally:
        if not args.keep:
            subprocess.run([*vm, "destroy", str(inv), "--yes", "--delete-rootfs"],
                           env=env(), capture_output=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
