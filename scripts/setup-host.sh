#!/usr/bin/env bash
# Prepare a Debian host for virtmix: install libvirt (LXC + QEMU drivers) and the rootfs
# tools, then start virtlogd and libvirtd by hand (these machines have no systemd as PID 1).
# Idempotent: on a host whose libvirtd already answers, it changes nothing there.
# Every change it makes is printed, so an admin knows what happened to the host.
set -euo pipefail

say() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (it installs packages and starts libvirtd)" >&2
  exit 2
fi

PKGS=(libvirt-daemon libvirt-daemon-driver-lxc libvirt-daemon-driver-qemu libvirt-clients
      libvirt-dev pkg-config debootstrap mmdebstrap qemu-system-x86 qemu-utils libxml2-utils
      busybox-static cpio iproute2 openssh-server openssh-client lxc tmux e2fsprogs
      debian-archive-keyring kmod)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps packages from trying to start services at install time.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
else
  say "packages already installed"
fi

daemon_alive() { pgrep -x "$1" >/dev/null 2>&1; }

if daemon_alive libvirtd && virsh -c lxc:///system uri >/dev/null 2>&1; then
  say "libvirtd already running and answering; nothing changed"
  exit 0
fi

# The QEMU driver refuses to load without these (LIBVIRT-HERE.md, step 1).
getent group kvm >/dev/null || { groupadd -r kvm; say "created group kvm"; }
id libvirt-qemu >/dev/null 2>&1 || { useradd -r -s /usr/sbin/nologin libvirt-qemu; say "created user libvirt-qemu"; }
mkdir -p /var/log/libvirt /var/lib/libvirt/images /run/libvirt
if ! grep -q '^user = "root"' /etc/libvirt/qemu.conf 2>/dev/null; then
  printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
  say "qemu.conf: guests run as root (avoids image ownership trouble)"
fi

# libvirt 9.0's LXC driver fails (and libvirtd then segfaults) when the host has a cgroup2
# mount at /sys/fs/cgroup/unified next to the v1 hierarchies: it tries to create that
# directory inside the container. Unmounting the empty unified mount makes the host pure v1.
# We leave every v1 hierarchy and its groups alone.
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null && [ -d /sys/fs/cgroup/memory ]; then
  find /sys/fs/cgroup/unified -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
  umount -l /sys/fs/cgroup/unified
  say "unmounted the hybrid cgroup2 mount /sys/fs/cgroup/unified (libvirt LXC needs pure v1 here)"
fi

# A crashed libvirtd leaves its socket; only a live process counts.
if ! daemon_alive virtlogd; then virtlogd -d; say "started virtlogd"; fi
if ! daemon_alive libvirtd; then
  rm -f /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro
  libvirtd -d
  say "started libvirtd"
fi
for _ in $(seq 1 50); do
  virsh -c lxc:///system uri >/dev/null 2>&1 && virsh -c qemu:///system uri >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -c lxc:///system uri >/dev/null && virsh -c qemu:///system uri >/dev/null
say "libvirtd answers on lxc:///system and qemu:///system"
