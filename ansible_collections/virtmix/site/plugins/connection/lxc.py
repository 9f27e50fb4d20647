# Copyright: virtmix contributors; Apache-2.0
"""Ansible connection into a virtmix (libvirt LXC) container, as `virtmix attach` enters it."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lxc
short_description: Run tasks inside a libvirt LXC container the way virtmix attach does
description:
  - Enters every namespace of the container's init with C(nsenter -a), the user namespace
    included, so in an unprivileged (idmapped) container tasks run as the container's root
    (uid 0), and joins the container's cgroups first, so commands count against its limits.
  - A container nested in a KVM guest is reached through the guest over ssh with virtmix's
    key and pinned host keys (set I(guest) and I(ssh_config); C(virtmix inventory ansible)
    and the C(virtmix.site.inventory) plugin set both).
  - Needs root on the machine the container runs on, and C(virtmix) importable by Ansible's
    Python.
author: virtmix contributors
options:
  remote_addr:
    description: The container's libvirt domain name.
    default: inventory_hostname
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: virtmix_lxc_name
  guest:
    description: Address of the guest the container is nested in; empty for this machine.
    type: str
    default: ''
    vars:
      - name: virtmix_lxc_guest
  ssh_config:
    description: virtmix's ssh client config (its key, its pinned known_hosts).
    type: str
    default: ''
    vars:
      - name: virtmix_lxc_ssh_config
  ssh_user:
    description: The user ssh logs into the guest as.
    type: str
    default: root
    vars:
      - name: virtmix_lxc_ssh_user
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()


class Connection(ConnectionBase):
    """Local: nsenter into the container. Nested: ssh to the guest, nsenter there."""

    transport = "virtmix.site.lxc"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._enter = None

    def _connect(self):
        if self._connected:
            return self
        try:
            from virtmix.handoff import enter
        except ImportError as exc:
            raise AnsibleError("virtmix.site.lxc needs virtmix importable by Ansible's Python "
                               f"(install Ansible where virtmix is installed): {exc}") from None
        self._enter = enter
        self._connected = True
        return self

    def _name(self):
        return self.get_option("remote_addr") or self._play_context.remote_addr

    def _argv(self, shell_cmd):
        """argv and preexec function that run shell_cmd in the container."""
        guest = self.get_option("guest")
        if not guest:
            from virtmix.errors import VirtmixError

            try:
                return self._enter.local_command(self._name(), shell_cmd)
            except VirtmixError as exc:
                raise AnsibleConnectionFailure(f"{self._name()}: {exc}") from None
        argv = ["ssh"]
        if self.get_option("ssh_config"):
            argv += ["-F", self.get_option("ssh_config")]
        # One ssh connection per guest serves every task (a master kept for a minute).
        cp_dir = os.path.expanduser("~/.ansible/cp")
        os.makedirs(cp_dir, mode=0o700, exist_ok=True)
        argv += ["-T", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                 "-o", f"ControlPath={cp_dir}/virtmix-%C",
                 f"{self.get_option('ssh_user')}@{guest}",
                 self._enter.remote_script(self._name(), shell_cmd)]
        return argv, None

    def _run(self, shell_cmd, stdin=None, stdout=subprocess.PIPE):
        argv, preexec = self._argv(shell_cmd)
        display.vvv(f"EXEC {shlex.join(argv)}", host=self._name())
        proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.PIPE,
                                stdout=stdout, stderr=subprocess.PIPE, preexec_fn=preexec)
        return proc

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        proc = self._run(to_text(cmd))
        out, err = proc.communicate(in_data)
        if self.get_option("guest") and proc.returncode == 255:
            raise AnsibleConnectionFailure(f"ssh to guest {self.get_option('guest')} failed: "
                                           f"{to_text(err).strip()}")
        return proc.returncode, out, err

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._name())
        if not os.path.exists(to_bytes(in_path)):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(to_bytes(in_path), "rb") as src:
            proc = self._run(f"cat > {shlex.quote(out_path)}", stdin=src)
            _, err = proc.communicate()
        if proc.returncode != 0:
            raise AnsibleError(f"failed to put {in_path} to {out_path} in {self._name()}: "
                               f"{to_text(err).strip()}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._name())
        with open(to_bytes(out_path), "wb") as dst:
            proc = self._run(f"cat {shlex.quote(in_path)}", stdout=dst)
            _, err = proc.communicate(b"")
        if proc.returncode != 0:
            raise AnsibleError(f"failed to fetch {in_path} from {self._name()}: "
                               f"{to_text(err).strip()}")

    def close(self):
        self._connected = False
