#!/usr/bin/env bash
# Build a minimal busybox root tree for libvirt LXC test containers.
# Usage: make-busybox-rootfs.sh [--shift BASE] DIR
#   --shift BASE  chown the tree to BASE:BASE (plus each file's own uid/gid) so an
#                 unprivileged domain with <idmap><uid start='0' target='BASE' .../> owns it.
# Idempotent (rerunning rewrites the same files) and fast (well under a second): it uses
# symlinks to one static busybox binary, no package manager.
set -euo pipefail

usage() { echo "usage: $0 [--shift BASE] DIR" >&2; exit 2; }

shift_base=""
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shift) [ $# -ge 2 ] || usage; shift_base="$2"; shift 2 ;;
    --shift=*) shift_base="${1#--shift=}"; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$dir" ] || usage; dir="$1"; shift ;;
  esac
done
[ -n "$dir" ] || usage
if [ -n "$shift_base" ] && ! [[ "$shift_base" =~ ^[0-9]+$ ]]; then
  echo "$0: --shift expects a number, got '$shift_base'" >&2; exit 2
fi

# busybox-static is in scripts/setup-host.sh's package list; a dynamic busybox would need
# the host's libc copied into the tree, so insist on the static one.
BUSYBOX=/bin/busybox
if ! [ -x "$BUSYBOX" ]; then
  echo "$0: $BUSYBOX missing: run scripts/setup-host.sh (installs busybox-static)" >&2; exit 3
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "$0: $BUSYBOX is dynamically linked; install busybox-static" >&2; exit 3
fi

mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc/init.d root tmp var/log var/run run proc sys dev \
         home mnt
chmod 1777 tmp
chmod 700 root
cp -f "$BUSYBOX" bin/busybox

# One symlink per applet at the path busybox itself advertises (bin/sh, sbin/init, ...).
# `busybox --install -s` inside the tree does it in one process (a shell loop of ln calls
# takes ~1 s); it leaves existing links alone, which keeps reruns idempotent.
chroot . /bin/busybox --install -s

cat > etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > etc/group <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "virtmix-busybox" > etc/hostname
cat > etc/hosts <<'EOF'
127.0.0.1 localhost
EOF

# busybox init reads /etc/inittab. libvirt LXC gives the container /dev/console wired to
# its <console type='pty'/>; a respawning shell there makes `virsh console` useful. The rc
# script puts tmpfs on /run and /tmp (libvirt mounts only /proc, /sys, /dev), so several
# containers can share one tree, and marks in /run that init got that far: tests wait
# for /run/virtmix-init-done.
cat > etc/inittab <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
EOF
cat > etc/init.d/rcS <<'EOF'
#!/bin/sh
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname -F /etc/hostname
ip link set lo up 2>/dev/null
echo up > /run/virtmix-init-done
EOF
chmod 755 etc/init.d/rcS
# sbin/init is already the busybox applet symlink (from --list-full).
[ -L sbin/init ] || ln -sfn /bin/busybox sbin/init

if [ -n "$shift_base" ]; then
  # Map every file's owner into the container's range: owner u becomes BASE+u. All files
  # here are root-owned except what a rerun may have shifted already, so use numeric
  # BASE for uid/gid 0 and leave already-shifted entries alone (idempotent).
  find . -xdev \( -uid 0 -o -gid 0 \) -exec chown -h "$shift_base:$shift_base" {} +
fi
