"""What a root filesystem is made of (RootfsSpec) and how one container customises it."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.inventory import rules

# Bumped whenever the build recipe (extra packages, masked units, base customisation)
# changes, so that trees built by an older virtmix are not reused as if identical.
# 2: virtmix-meminfo.service (procps vs libvirt's FUSE meminfo); 3: its umount lazy, and the
# generators a container cannot use masked; 4: /sbin/init wrapped (rootfs/cgroup_init.py) so
# that systemd gets a name=systemd group of its own on a cgroup v1 host; 5: systemd-update-
# done's stamps in the base (no systemd-sysusers at each clone's first boot),
# systemd-remount-fs masked (empty fstab); 6: both (4 and 5 were made on two branches).
RECIPE_VERSION = 6

SUPPORTED_DISTROS = ("debian",)


def _rule(check: Callable[[str], str], value: str, what: str) -> None:
    """Apply one of the inventory's rules (inventory.rules) as a RootfsError."""
    try:
        check(value)
    except ValueError as exc:
        raise RootfsError(f"{what}: {exc}") from None


def _check_word(value: str, what: str) -> None:
    _rule(rules.check_word, value, f"rootfs {what}")


@dataclass(frozen=True)
class RootfsSpec:
    """Mirrors the inventory's `rootfs: {distro, suite, variant, ...}` block."""

    distro: str = "debian"
    suite: str = "bookworm"
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    packages: tuple[str, ...] = ()
    architecture: str | None = None  # None = the host's dpkg architecture
    mirror: str | None = None  # None = the host's apt sources (see sources.py)
    hook: str | None = None  # site script run in the tree (chroot) after the build

    def __post_init__(self) -> None:
        if self.distro not in SUPPORTED_DISTROS:
            raise RootfsError(
                f"rootfs distro {self.distro!r}: expected one of {', '.join(SUPPORTED_DISTROS)}"
            )
        _rule(rules.check_variant, self.variant, "rootfs")
        _rule(rules.check_suite, self.suite, "rootfs")
        for c in self.components:
            _check_word(c, "component")
        for p in self.packages:
            _check_word(p, "package")
        if self.architecture is not None:
            _check_word(self.architecture, "architecture")
        if not self.components:
            raise RootfsError("rootfs components: expected at least one (e.g. main)")
        # Order and duplicates of packages/components do not change the tree: normalise
        # so that the cache key does not either.
        object.__setattr__(self, "packages", tuple(sorted(set(self.packages))))
        object.__setattr__(self, "components", tuple(dict.fromkeys(self.components)))

    def with_packages(self, *extra: str) -> RootfsSpec:
        """The same spec with more packages (e.g. openssh-server for sshd)."""
        return replace(self, packages=tuple(self.packages) + tuple(extra))

    def hook_digest(self) -> str | None:
        """sha256 of the hook script's content, or None without a hook."""
        if self.hook is None:
            return None
        path = Path(self.hook)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise RootfsError(f"rootfs hook {self.hook}: cannot read it ({e.strerror})") from e

    def key_fields(self, architecture: str) -> dict:
        """The fields that decide the tree's content (the hook by content, not by path)."""
        d = asdict(self)
        d["architecture"] = architecture
        d["hook"] = self.hook_digest()
        d["recipe"] = RECIPE_VERSION
        return d

    def cache_key(self, architecture: str | None = None) -> str:
        """A short stable digest of every field that changes the tree, plus a readable prefix."""
        arch = architecture or self.architecture or host_architecture()
        blob = json.dumps(self.key_fields(arch), sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:16]
        return f"{self.distro}-{self.suite}-{self.variant}-{arch}-{digest}"


def host_architecture() -> str:
    """The host's dpkg architecture (amd64, arm64, ...)."""
    import subprocess

    try:
        out = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise RootfsError(f"cannot ask dpkg for the host architecture: {e}") from e
    return out.stdout.strip()


@dataclass(frozen=True)
class InterfaceSetup:
    """One container interface as systemd-networkd will configure it."""

    name: str = "eth0"
    dhcp: bool = True
    ipv4: str | None = None  # CIDR, e.g. 192.0.2.10/24
    gateway: str | None = None

    def __post_init__(self) -> None:
        _rule(rules.check_ifname, self.name, f"interface name {self.name!r}")
        if self.ipv4 is not None:
            try:
                ipaddress.IPv4Interface(self.ipv4)
            except ValueError as e:
                raise RootfsError(f"interface {self.name} ipv4 {self.ipv4!r}: {e}") from e
            if "/" not in self.ipv4:
                raise RootfsError(f"interface {self.name} ipv4 {self.ipv4!r}: expected a CIDR")
        if self.gateway is not None:
            try:
                ipaddress.IPv4Address(self.gateway)
            except ValueError as e:
                raise RootfsError(f"interface {self.name} gateway {self.gateway!r}: {e}") from e
        if not self.dhcp and self.ipv4 is None:
            raise RootfsError(f"interface {self.name}: expected dhcp or an ipv4 address")


@dataclass(frozen=True)
class ContainerSetup:
    """Per-container customisation, from the inventory entry."""

    name: str
    hostname: str | None = None  # None = the container's name
    interfaces: tuple[InterfaceSetup, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    root_password: str | None = None  # None = locked; "generate" = generated, shown once
    sshd: bool = False
    locale: str = "C.UTF-8"
    timezone: str = "Etc/UTC"
    nameservers: tuple[str, ...] = ()  # /etc/resolv.conf; none: no resolver configured
    # cloud-init's NoCloud seed, (file name, text) pairs: written into trees with cloud-init
    cloud_seed: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for ns in self.nameservers:
            try:
                ipaddress.ip_address(ns)
            except ValueError:
                raise RootfsError(f"container {self.name} nameserver {ns!r}: not an IP "
                                  "address") from None
        _rule(rules.check_name, self.name, "container name")
        _rule(rules.check_hostname, self.hostname or self.name, f"container {self.name}")
        if self.root_password not in (None, "generate"):
            # A literal password would end up in inventories and plans: refuse it.
            raise RootfsError(
                f"container {self.name} root_password: expected 'generate' or nothing",
                hint="give ssh_keys, or root_password: generate (shown once, stored 0600)",
            )
        for k in self.ssh_keys:
            _rule(rules.check_ssh_key, k, f"container {self.name} ssh_keys")
        _rule(rules.check_locale, self.locale, f"container {self.name}")
        _rule(rules.check_timezone, self.timezone, f"container {self.name}")

    @property
    def fqdn(self) -> str:
        return self.hostname or self.name
