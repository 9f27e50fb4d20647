"""Turn a freshly bootstrapped Debian tree into a guest image that hosts LXC containers.

Shared by every guest of the image; what differs per guest (hostname, address, SSH keys)
comes from the guest's config disk, applied at every boot by virtmix-config.service.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.util.files import replace_symlink, write_file

ROOT_LABEL = "vmixroot"
# A busybox root tree shipped in the image, for simple containers (tests, one-shot tools).
BUSYBOX_TREE = "/usr/share/virtmix/busybox-root"

CONFIG_DIR = "/run/virtmix-config"
# In the initramfs (init-bottom, so the real root is mounted): hand the files that virtmix
# appended to this guest's initrd (a cpio with /virtmix/...) to the real system. initramfs-
# tools moves /run onto the real root before switching to it, so /run is the way across.
INITRAMFS_HOOK = f"""#!/bin/sh
PREREQ=""
prereqs() {{ echo "$PREREQ"; }}
case "$1" in prereqs) prereqs; exit 0 ;; esac
if [ -d /virtmix ]; then
  mkdir -p {CONFIG_DIR} && chmod 0700 {CONFIG_DIR} && cp -a /virtmix/. {CONFIG_DIR}/
fi
"""
INITRAMFS_HOOK_PATH = "etc/initramfs-tools/scripts/init-bottom/virtmix-config"

# Installs this guest's own files (hostname, addresses, ssh keys) from what the initramfs
# handed over. Runs at every boot: a regenerated initrd (new address, rotated keys) takes
# effect on the next boot. The private host key does not stay in /run.
CONFIG_SCRIPT = f"""#!/bin/sh
# virtmix: apply this guest's configuration (hostname, addresses, ssh keys).
set -eu
m={CONFIG_DIR}
[ -f $m/hostname ] || {{ echo "virtmix-config: no $m (not virtmix's initrd?)" >&2; exit 1; }}
install -m 0644 $m/hostname /etc/hostname
hostname "$(cat /etc/hostname)"
printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n' "$(cat /etc/hostname)" > /etc/hosts
rm -f /etc/systemd/network/10-virtmix-*.network
for f in $m/network/*.network; do [ -e "$f" ] && install -m 0644 "$f" /etc/systemd/network/; done
install -m 0600 $m/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
install -m 0644 $m/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 0700 /root/.ssh
install -m 0600 $m/authorized_keys /root/.ssh/authorized_keys
echo "virtmix-config: applied $(cat $m/virtmix.json)"
rm -rf $m
"""

CONFIG_UNIT = """[Unit]
Description=virtmix per-guest configuration (hostname, addresses, ssh keys)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=sysinit.target systemd-networkd.service ssh.service libvirtd.service
Wants=systemd-remount-fs.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/virtmix-config
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""

# Debian's libvirt-daemon ships no systemd unit (libvirt-daemon-system has them, with a
# socket activation and config we do not need); libvirtd answers on its unix socket,
# which the ssh transport reaches through virt-ssh-helper.
LIBVIRTD_UNIT = """[Unit]
Description=libvirt daemon (started by virtmix's guest image)
After=network.target virtmix-config.service local-fs.target

[Service]
Type=notify
ExecStart=/usr/sbin/libvirtd
Restart=on-failure
KillMode=process

[Install]
WantedBy=multi-user.target
"""

SSHD_CONFIG = """# virtmix: keys only; the host key comes from the config disk (pinned by virtmix).
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

# acpid runs this on the ACPI power button, which is how libvirt asks a guest to shut down
# (virtmix stop/destroy/apply wait settings.shutdown_timeout for it, then force it off).
# Debian's acpid ships no events; logind would handle the button, but it needs dbus.
POWER_EVENT = "event=button/power.*\naction=/bin/systemctl poweroff\n"
POWER_EVENT_PATH = "etc/acpi/events/virtmix-power"

# Nothing in a provisioning guest needs them, and under software emulation each costs
# seconds of boot or background CPU.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-pstore.service", "getty@tty1.service",
    "getty-static.service",
    "systemd-timesyncd.service", "man-db.timer", "systemd-networkd-wait-online.service",
)
ENABLED = {
    # acpid: Debian enables only its socket, which nothing connects to at boot.
    "multi-user.target.wants": ("systemd-networkd.service", "libvirtd.service", "ssh.service",
                                "acpid.service"),
    "sockets.target.wants": ("systemd-networkd.socket",),
    "sysinit.target.wants": ("virtmix-config.service",),
}






def _busybox_tree(tree: Path) -> None:
    """A minimal root tree around the image's static busybox, for simple containers."""
    root = tree / BUSYBOX_TREE.lstrip("/")
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = tree / "bin/busybox"
    if not (root / "bin/busybox").exists():
        os.link(busybox, root / "bin/busybox")
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    for applet in out.stdout.split():
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    write_file(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    write_file(root / "etc/group", "root:x:0:\n")
    os.chmod(root / "tmp", 0o1777)


def _qemu_driver_users(tree: Path) -> None:
    """libvirt-daemon depends on the QEMU driver, whose initialisation fails (and takes
    libvirtd down with it) unless the user and group libvirt-qemu and the group kvm exist."""
    cmds = [["groupadd", "--root", str(tree), "-r", "kvm"],
            ["groupadd", "--root", str(tree), "-r", "libvirt-qemu"],
            ["useradd", "--root", str(tree), "-r", "-g", "libvirt-qemu", "-G", "kvm",
             "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu"]]
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode not in (0, 9):  # 9: already exists
            raise RootfsError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")


def customise_image_tree(tree: Path) -> None:
    """Everything the guest image needs beyond its packages (see the module docstring)."""
    if not (tree / "usr/sbin/libvirtd").is_file():
        raise RootfsError(f"{tree}: no /usr/sbin/libvirtd after the build; package missing?")
    etc = tree / "etc"
    write_file(etc / "fstab", f"LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 0\n")
    # An empty machine-id: systemd writes a new one on each guest's first boot.
    write_file(etc / "machine-id", "", 0o444)
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    write_file(etc / "hostname", "localhost\n")
    # openssh-server's postinst made host keys: every guest of the image would share them.
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    write_file(etc / "ssh/sshd_config.d/virtmix.conf", SSHD_CONFIG)
    write_file(tree / "usr/local/sbin/virtmix-config", CONFIG_SCRIPT, 0o755)
    sysdir = etc / "systemd/system"
    write_file(sysdir / "virtmix-config.service", CONFIG_UNIT)
    write_file(sysdir / "libvirtd.service", LIBVIRTD_UNIT)
    (tree / "var/log/libvirt").mkdir(parents=True, exist_ok=True)
    write_file(tree / POWER_EVENT_PATH, POWER_EVENT)
    _qemu_driver_users(tree)
    for unit in MASKED_UNITS:
        (sysdir / "getty.target.wants" / unit).unlink(missing_ok=True)
        (sysdir / "timers.target.wants" / unit).unlink(missing_ok=True)
        replace_symlink(sysdir / unit, "/dev/null")
    for wants, units in ENABLED.items():
        for unit in units:
            ours = (sysdir / unit).exists()
            target = f"/etc/systemd/system/{unit}" if ours else f"/lib/systemd/system/{unit}"
            replace_symlink(sysdir / wants / unit, target)
    _busybox_tree(tree)
