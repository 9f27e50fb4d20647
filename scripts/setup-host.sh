#!/usr/bin/env bash
# Prepare a Debian 12 host for virtmix: install libvirt (LXC + QEMU drivers), the rootfs and
# test tools, tune the host (cgroup layout, inotify/pid/keyring limits), then make sure virtlogd and
# libvirtd run (started by hand when no service manager did it).
# Idempotent: every step checks first and only acts when needed; every change is printed
# ("setup-host: changed: ..."), so an admin knows what happened to the host. A second run
# on a prepared host prints "nothing changed". When a libvirtd already answers, its setup is
# not touched (qemu.conf, cgroup layout): only what it lacks for virtmix is reported.
set -euo pipefail

say() { printf 'setup-host: %s\n' "$*"; }
changed=0
did() { changed=$((changed + 1)); say "changed: $*"; }
die() { say "ERROR: $1" >&2; exit "${2:-1}"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts libvirtd)" 2

# python3-venv/-dev + gcc: the Makefile's venv builds libvirt-python from source against
# libvirt-dev. procps (pgrep) and ca-certificates (pip over https) are absent from minimal
# Debian images. iptables and dnsmasq-base: libvirtd needs them (looked up when it starts)
# to start any network with an address, isolated ones included.
PKGS=(libvirt-daemon libvirt-daemon-driver-lxc libvirt-daemon-driver-qemu libvirt-clients
      libvirt-dev pkg-config debootstrap mmdebstrap qemu-system-x86 qemu-utils libxml2-utils
      busybox-static cpio iproute2 openssh-server openssh-client lxc tmux e2fsprogs
      iptables dnsmasq-base dpkg-dev rsync
      debian-archive-keyring kmod procps util-linux ca-certificates make gcc
      python3 python3-venv python3-dev)

install_packages() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || { say "packages already installed"; return; }
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps packages from starting services at install time (we start them
  # below, the same way on hosts with and without systemd). Keep an admin's own file.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $own_policy -eq 0 ] || rm -f /usr/sbin/policy-rc.d
  did "installed ${missing[*]}"
}

qemu_prereqs() {
  # A libvirtd that already answers is someone's working setup: its configuration is left
  # as it is (the issue: "on a host with a running libvirtd it changes nothing").
  if [ "$ALREADY_RUNNING" -eq 1 ]; then
    grep -qE '^\s*user\s*=' /etc/libvirt/qemu.conf 2>/dev/null \
      || say "NOTE: qemu.conf sets no user; left alone (libvirtd already runs)"
    return
  fi
  # The QEMU driver refuses to load without these (LIBVIRT-HERE.md, step 1).
  getent group kvm >/dev/null || { groupadd -r kvm; did "created group kvm"; }
  id libvirt-qemu >/dev/null 2>&1 \
    || { useradd -r -s /usr/sbin/nologin libvirt-qemu; did "created user libvirt-qemu"; }
  local d
  for d in /var/log/libvirt /var/lib/libvirt/images /run/libvirt; do
    [ -d "$d" ] || { mkdir -p "$d"; did "created $d"; }
  done
  if ! grep -qE '^\s*user\s*=' /etc/libvirt/qemu.conf 2>/dev/null; then
    printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
    did "qemu.conf: guests run as root (avoids image ownership trouble)"
    qemu_conf_changed=1
  fi
}

# libvirt 9.0's LXC driver fails (and libvirtd then segfaults) when the host has a cgroup2
# mount at /sys/fs/cgroup/unified next to v1 hierarchies ("hybrid"): it tries to create that
# directory inside the container. Unmounting the unified mount makes the host pure v1.
# We leave every v1 hierarchy and its groups alone. On a pure v2 host (/sys/fs/cgroup is
# cgroup2, Debian 12's default with systemd) there is nothing to do.
fix_cgroups() {
  local fstype
  fstype=$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || echo none)
  if [ "$fstype" = "cgroup2fs" ]; then
    local c missing=""
    for c in cpu memory; do
      grep -qw "$c" /sys/fs/cgroup/cgroup.controllers 2>/dev/null || missing+=" $c"
    done
    # libvirt enables controllers for its /machine group itself; it cannot when the root
    # does not offer them (they are bound to a v1 hierarchy elsewhere).
    [ -z "$missing" ] || say "WARNING: cgroup v2 root lacks controllers:$missing;" \
      "<cputune>/<memtune> of containers will fail"
    say "cgroups: pure v2, nothing to change"; return
  fi
  if ! mountpoint -q /sys/fs/cgroup; then
    # No service manager mounted cgroups (bare containers, minimal inits): libvirt needs
    # some hierarchy, and v2 needs no per-controller mounts.
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    did "mounted cgroup2 on /sys/fs/cgroup (nothing was mounted there)"; return
  fi
  if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null && [ "$ALREADY_RUNNING" -eq 1 ]; then
    say "WARNING: hybrid cgroups (/sys/fs/cgroup/unified) under a running libvirtd: libvirt" \
        "9.0 LXC fails on this layout; left alone (libvirtd already runs). Stop libvirtd" \
        "and rerun this script to fix it."
  elif mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
    # Processes in a child group mean a service manager (systemd in hybrid mode) tracks
    # services there; unmounting would break it. Only an unused mount is removed.
    local busy
    busy=$(find /sys/fs/cgroup/unified -mindepth 2 -name cgroup.procs \
             -exec grep -l . {} + 2>/dev/null | head -1 || true)
    if [ -n "$busy" ]; then
      die "hybrid cgroups with processes in ${busy%/cgroup.procs}: libvirt 9.0 LXC fails on \
this layout. Boot with systemd.unified_cgroup_hierarchy=1 (pure v2) and rerun." 4
    fi
    find /sys/fs/cgroup/unified -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    umount -l /sys/fs/cgroup/unified
    did "unmounted the hybrid cgroup2 mount /sys/fs/cgroup/unified (libvirt LXC needs pure v1)"
  else
    say "cgroups: v1 without a unified mount, nothing to change"
  fi
}

# Limits that cap how many idle systemd containers fit (docs/density.md, measured with
# benchmarks/density.py): raised for this boot when below the minimum, and persisted in
# sysctl.d for later boots. Never lowered. Each row: key, minimum, why.
#  - inotify instances: ~6 per systemd container, all charged to host root (their user
#    namespaces are created by root); the default 128 fits ~21 containers, 8192 ~1,365.
#  - pid_max: a container is ~5 processes + libvirt_lxc's threads (~10 pids); 32768 (the
#    default on small hosts) fits ~3,000 containers with nothing else running.
#  - pty.max: libvirt gives every container a console pty; at the default 4096 the
#    1,536th container failed to start ("Failed to allocate tty: No space left on device").
#  - keys: systemd gives every service its own session keyring, charged to the uid that
#    container root maps to; containers sharing one id range share the 200-key quota.
SYSCTLS=(
  "fs.inotify.max_user_instances 32768 systemd containers need ~6 each (2,000 need 12,000)"
  "fs.inotify.max_user_watches 1048576 systemd watches its unit dirs in every container"
  "kernel.pid_max 4194304 ~10 pids per container (libvirt_lxc threads included)"
  "kernel.pty.max 65536 ~3 ptys per container (its console); 4096 stopped starts at ~1,535"
  "kernel.keys.maxkeys 100000 a session keyring per service, charged to the shared range's uid"
  "kernel.keys.maxbytes 10000000 the byte quota that goes with kernel.keys.maxkeys"
)
SYSCTL_CONF=/etc/sysctl.d/60-virtmix-density.conf
PROC_SYS=${PROC_SYS:-/proc/sys}  # another root only to try the step on a copy
raise_limits() {
  local row key min why cur path conf_text="" changed_conf=0
  for row in "${SYSCTLS[@]}"; do
    read -r key min why <<<"$row"
    path=$PROC_SYS/${key//.//}
    [ -r "$path" ] || { say "WARNING: $key does not exist on this kernel; skipped"; continue; }
    cur=$(cat "$path")
    if [ "$cur" -lt "$min" ]; then
      if echo "$min" > "$path" 2>/dev/null; then
        did "$key $cur -> $min ($why)"
      else
        say "WARNING: cannot raise $key ($cur, read-only /proc/sys?): $why"
      fi
    fi
    conf_text+="# $why"$'\n'"$key = $(( cur > min ? cur : min ))"$'\n'
  done
  # The older file of this script (inotify only) would lower the instances back at boot.
  if [ -f /etc/sysctl.d/60-virtmix-inotify.conf ]; then
    rm -f /etc/sysctl.d/60-virtmix-inotify.conf
    changed_conf=1
  fi
  conf_text="# virtmix: host limits for many containers (docs/density.md)"$'\n'"$conf_text"
  if [ ! -f "$SYSCTL_CONF" ] || [ "$(cat "$SYSCTL_CONF")" != "${conf_text%$'\n'}" ]; then
    printf '%s' "$conf_text" > "$SYSCTL_CONF"
    changed_conf=1
  fi
  [ $changed_conf -eq 0 ] || did "wrote $SYSCTL_CONF (keeps the limits after reboot)"
}

answers() { virsh -c lxc:///system uri >/dev/null 2>&1 && virsh -c qemu:///system uri >/dev/null 2>&1; }

# QEMU guests log through virtlogd: a libvirtd that answers is not enough when virtlogd died.
ensure_virtlogd() {
  pgrep -x virtlogd >/dev/null && return
  if [ -d /run/systemd/system ] && systemctl is-active -q virtlogd.socket 2>/dev/null; then
    return  # socket-activated by systemd: it starts on first use
  fi
  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock  # left by a crash
  virtlogd -d
  did "started virtlogd"
}

start_daemons() {
  ensure_virtlogd
  # A service manager's (socket-activated) libvirtd counts too: ask the daemon, not pgrep.
  if answers; then
    say "libvirtd answers on lxc:///system and qemu:///system"
    [ "${qemu_conf_changed:-0}" -eq 0 ] \
      || say "NOTE: qemu.conf changed while libvirtd ran: restart libvirtd to apply it"
    return
  fi
  if pgrep -x libvirtd >/dev/null; then
    # Running but not answering yet (just started) or hung: give it a moment, then say so.
    wait_answer 25 || die "libvirtd (pid $(pgrep -x libvirtd | tr '\n' ' ')) runs but does \
not answer on lxc:///system and qemu:///system; stop it and rerun this script" 5
  else
    # A crashed libvirtd leaves its socket behind; only a live process counts.
    rm -f /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro
    libvirtd -d
    did "started libvirtd"
    wait_answer 50 || die "libvirtd started but does not answer; see /var/log/libvirt" 5
  fi
  say "libvirtd answers on lxc:///system and qemu:///system"
}

wait_answer() {
  local i
  for ((i = 0; i < $1; i++)); do answers && return 0; sleep 0.2; done
  answers
}

ALREADY_RUNNING=0
command -v virsh >/dev/null && answers && ALREADY_RUNNING=1
install_packages
qemu_prereqs
fix_cgroups
raise_limits
start_daemons
if [ $changed -eq 0 ]; then say "nothing changed"; else say "$changed change(s) made"; fi
