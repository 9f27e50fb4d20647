#!/usr/bin/env bash
# Fetch a Debian cloud kernel and build a busybox initramfs for QEMU guest tests.
# Usage: fetch-guest-kernel.sh DIR
# Writes DIR/vmlinuz and DIR/initrd.img, and prints both paths. The kernel comes from the
# host's own apt sources (`apt-get download` of the package linux-image-cloud-amd64 points
# to), is cached under $VIRTMIX_KERNEL_CACHE (default /var/cache/virtmix-test/kernel) and
# reused. The initrd's /init mounts proc/sys/dev, prints the marker line
# "VIRTMIX-GUEST-UP" on the console (boot with console=ttyS0), then:
#   virtmix.poweroff on the kernel command line -> powers off (needs <acpi/> in the domain)
#   virtmix.shell                                -> runs a shell on the console
#   virtmix.tick                                 -> prints "VIRTMIX-TICK N" every 0.2 s
#                                                   (a migration test sees it run on)
#   otherwise                                    -> sleeps forever
set -euo pipefail

say() { printf 'fetch-guest-kernel: %s\n' "$*" >&2; }
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
out=$1
CACHE=${VIRTMIX_KERNEL_CACHE:-/var/cache/virtmix-test/kernel}
META=linux-image-cloud-amd64
BUSYBOX=/bin/busybox
MARKER=VIRTMIX-GUEST-UP

for tool in apt-get apt-cache dpkg cpio gzip; do
  command -v "$tool" >/dev/null || { say "$tool missing: run scripts/setup-host.sh"; exit 3; }
done
[ -x "$BUSYBOX" ] || { say "$BUSYBOX missing: run scripts/setup-host.sh (busybox-static)"; exit 3; }

mkdir -p "$CACHE" "$out"
# Serialise concurrent callers (parallel test sessions) on the shared cache.
exec 9>"$CACHE/.lock"
flock 9

# The meta package depends on exactly one versioned image package: that is "current".
resolve() { apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  say "apt lists do not know $META; running apt-get update"
  apt-get update -qq
  pkg=$(resolve || true)
fi
[ -n "$pkg" ] || { say "cannot resolve $META to a kernel package (apt-cache depends)"; exit 4; }

kdir="$CACHE/$pkg"
if [ -s "$kdir/vmlinuz" ]; then
  say "using cached $pkg"
else
  say "downloading $pkg from the host's apt sources"
  tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download as root drops to _apt for the fetch; let it write the directory.
  chown _apt "$tmp" 2>/dev/null || true
  (cd "$tmp" && apt-get download -qq "$pkg")
  dpkg -x "$tmp"/"$pkg"_*.deb "$tmp/x"
  mkdir -p "$tmp/k"
  cp "$tmp"/x/boot/vmlinuz-* "$tmp/k/vmlinuz"
  rm -rf "$kdir"
  mv "$tmp/k" "$kdir"
  say "cached $kdir/vmlinuz"
fi
cp -f "$kdir/vmlinuz" "$out/vmlinuz"

# The initramfs is a few files around a static busybox; building it takes well under a
# second, so it is rebuilt each time and always matches this script.
root=$(mktemp -d)
trap 'rm -rf "$root" ${tmp:+"$tmp"}' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc}
cp "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cat > "$root/init" <<EOF
#!/bin/sh
# PID 1 of the test guest: no modules, no root fs; the marker line is what tests wait for.
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname virtmix-guest
read up _ < /proc/uptime
echo "$MARKER uptime=\$up"
case " \$(cat /proc/cmdline) " in
  *" virtmix.poweroff "*) echo "VIRTMIX-GUEST-POWEROFF"; sync; poweroff -f ;;
  *" virtmix.shell "*) exec setsid cttyhack /bin/sh ;;
  *" virtmix.tick "*) i=0; while :; do echo "VIRTMIX-TICK \$i"; i=\$((i+1)); usleep 200000; done ;;
esac
while :; do sleep 3600; done
EOF
chmod 755 "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$out/initrd.img"
echo "$out/vmlinuz"
echo "$out/initrd.img"
