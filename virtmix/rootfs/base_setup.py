"""Turn a fresh debootstrapped tree into a container base (what lxc-debian did), run hooks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.rootfs import cgroup_init
from virtmix.rootfs.spec import RootfsSpec
from virtmix.util.files import replace_symlink, write_file

# Units that make no sense in a libvirt LXC container: no devices to trigger (udev), no
# hardware clock, no kernel modules or sysctl/binfmt of our own, no virtual terminals, no
# kernel debug/config filesystems. Most carry ConditionVirtualization=!container already;
# masking is explicit and also covers the ones that do not (getty-static, hwclock).
MASKED_UNITS = (
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "systemd-hwdb-update.service", "hwclock.service", "systemd-modules-load.service",
    "kmod-static-nodes.service", "modprobe@.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "getty-static.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "systemd-pstore.service", "systemd-firstboot.service", "systemd-timesyncd.service",
    "systemd-journald-audit.socket", "apt-daily.timer", "apt-daily-upgrade.timer",
    "fstrim.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    # Remounts / and /usr as fstab says; the fstab is empty (libvirt mounts the tree): one
    # exec per boot that does nothing.
    "systemd-remount-fs.service",
)
# Generators systemd runs at every boot (one exec each) for what a container has not: block
# devices to unlock or verify (cryptsetup, integrity, verity, GPT auto-mounts), a resume
# image, a kernel command line of its own (debug shell, systemd.run: /proc/cmdline is the
# host's), offline updates. Masked, a container's boot took about 30% less CPU here (about
# 0.23 -> 0.16 CPU-s, measured in its cpuacct cgroup), which is the start rate on a busy host.
# fstab, getty (console-getty), rc-local and sysv stay: admins and packages rely on them.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-integritysetup-generator",
    "systemd-veritysetup-generator", "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator", "systemd-debug-generator", "systemd-run-generator",
    "systemd-system-update-generator",
)
# Enabled so that the inventory's interfaces come up from /etc/systemd/network/*.network.
ENABLED_UNITS = {
    "multi-user.target.wants": ("systemd-networkd.service",),
    "sockets.target.wants": ("systemd-networkd.socket",),
}
HOOK_IN_TREE = "tmp/.virtmix-hook"
# libvirt's LXC driver serves /proc/meminfo from a FUSE file that cannot seek (ESPIPE), and
# procps-ng 4 (bookworm's ps aux, free, top) seeks it first and gives up ("ps: Unable to
# get total memory"). Unmounting it inside shows the kernel's own file (host totals, as a
# classic LXC container without lxcfs saw); the memory limit itself is unchanged.
# --lazy: a plain umount fails (EBUSY) while a process has the file open, and early
# boot reads it in parallel (one CI run under load kept the FUSE file: ps aux failed).
MEMINFO_UNIT = "virtmix-meminfo.service"
MEMINFO_UNIT_TEXT = """\
[Unit]
Description=Unmount libvirt's /proc/meminfo, which procps cannot read (virtmix)
DefaultDependencies=no
ConditionVirtualization=container
ConditionPathIsMountPoint=/proc/meminfo
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-/bin/umount --lazy /proc/meminfo

[Install]
WantedBy=sysinit.target
"""






def prepare_base(tree: Path) -> None:
    """Customisation shared by every container of this base (per-clone bits: customise.py)."""
    etc = tree / "etc"
    # Each clone writes its own; an empty file here means systemd would invent a
    # transient one, never a value shared between clones.
    write_file(etc / "machine-id", "", 0o444)
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    write_file(etc / "hostname", "localhost\n")
    # The builder copied the host's resolver; a container on its own network must not
    # inherit it. systemd-networkd (without resolved) does not write this file.
    write_file(etc / "resolv.conf", "# virtmix: no resolver configured for this container\n")
    write_file(etc / "fstab", "# virtmix: empty; libvirt mounts the container's filesystems\n")
    sysdir = etc / "systemd/system"
    for unit in MASKED_UNITS:
        replace_symlink(sysdir / unit, "/dev/null")
    for generator in MASKED_GENERATORS:
        replace_symlink(etc / "systemd/system-generators" / generator, "/dev/null")
    # getty@tty1 needs /dev/tty0, absent in a container; the console getty comes from
    # systemd-getty-generator, which adds console-getty.service when it runs in a container.
    (sysdir / "getty.target.wants/getty@tty1.service").unlink(missing_ok=True)
    unitdir = tree / "usr/lib/systemd/system"
    for wants, units in ENABLED_UNITS.items():
        for unit in units:
            if (unitdir / unit).exists():
                replace_symlink(sysdir / wants / unit, f"/lib/systemd/system/{unit}")
    write_file(sysdir / MEMINFO_UNIT, MEMINFO_UNIT_TEXT)
    replace_symlink(sysdir / "sysinit.target.wants" / MEMINFO_UNIT,
                    f"/etc/systemd/system/{MEMINFO_UNIT}")
    write_file(etc / "systemd/network/.virtmix",
               "# *.network files here are written per container\n")
    # openssh-server's postinst made host keys: they would be shared by every clone.
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(tree / "var/lib/apt/lists", ignore_errors=True)
    (tree / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    wrap_init(tree)
    mark_updated(tree)  # last: the stamps hold /usr's mtime once nothing else changes


def wrap_init(tree: Path) -> None:
    """Put cgroup_init's wrapper at /sbin/init, systemd's init diverted beside it.

    dpkg-divert (the tree's own, chrooted) records it, so an upgrade of systemd-sysv in the
    container installs the new /sbin/init at the diverted path and leaves the wrapper.
    Without systemd-sysv there is no systemd to wrap; a tree wrapped already stays so.
    """
    path = cgroup_init.init_path(tree)
    if path is None or cgroup_init.is_wrapped(tree):
        return
    real = path + cgroup_init.DIVERT_SUFFIX
    run_in_tree(tree, ["dpkg-divert", "--local", "--rename", "--divert", real, "--add", path])
    write_file(tree / path.lstrip("/"), cgroup_init.init_script(real), 0o755)


# systemd-update-done's stamp (man systemd-update-done.service): units with
# ConditionNeedsUpdate= (systemd-sysusers here) run while /etc/.updated or /var/.updated is
# missing or older than /usr, and a fresh tree has neither, so every clone ran them at its
# first boot: for a density run, at its only boot. The base is complete (its packages made
# their users), so the stamps are written here as systemd-update-done would after a boot:
# holding /usr's mtime. Anything that later makes /usr newer makes them run again.
UPDATED_TEXT = ("# This file was created by systemd-update-done. Its only\n"
                "# purpose is to hold a timestamp of the time this directory\n"
                "# was updated. See man:systemd-update-done.service(8).\n"
                "TIMESTAMP_NSEC={nsec}\n")


def mark_updated(tree: Path) -> None:
    usr = os.stat(tree / "usr")
    for d in ("etc", "var"):
        stamp = tree / d / ".updated"
        write_file(stamp, UPDATED_TEXT.format(nsec=usr.st_mtime_ns), 0o644)
        os.utime(stamp, ns=(usr.st_mtime_ns, usr.st_mtime_ns))


def run_in_tree(tree: Path, argv: list[str], log: Path | None = None,
                env: dict | None = None, stdin: bytes | None = None) -> None:
    """Run argv chrooted in tree with /proc and /dev, in a private mount namespace.

    The mounts live only in that namespace, so nothing stays mounted in the tree when the
    command ends or is killed.
    """
    script = ('set -e; mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"; '
              'mount -t sysfs sysfs "$1/sys" || true; t="$1"; shift; exec chroot "$t" "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "--",
           "sh", "-c", script, "sh", str(tree), *argv]
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        res = subprocess.run(cmd, input=stdin, stdout=out, stderr=subprocess.STDOUT if log
                             else subprocess.PIPE, env=full_env, check=False)
    finally:
        if log:
            out.close()
    if res.returncode != 0:
        detail = f"; log {log}" if log else f": {(res.stderr or b'').decode(errors='replace')}"
        raise RootfsError(f"{' '.join(argv)} in {tree} failed (exit {res.returncode}){detail}")


def run_hook(tree: Path, hook: Path, spec: RootfsSpec, log: Path) -> None:
    """Run the site hook chrooted in the new tree, with service starts disabled."""
    inside = tree / HOOK_IN_TREE
    shutil.copyfile(hook, inside)
    os.chmod(inside, 0o700)
    policy = tree / "usr/sbin/policy-rc.d"
    had_policy = policy.exists()
    if not had_policy:
        write_file(policy, "#!/bin/sh\nexit 101\n", 0o755)
    try:
        run_in_tree(tree, ["/" + HOOK_IN_TREE], log,
                    env={"VIRTMIX_DISTRO": spec.distro, "VIRTMIX_SUITE": spec.suite,
                         "VIRTMIX_VARIANT": spec.variant})
    except RootfsError as e:
        raise RootfsError(f"rootfs hook {hook}: {e}") from e
    finally:
        inside.unlink(missing_ok=True)
        if not had_policy:
            policy.unlink(missing_ok=True)
