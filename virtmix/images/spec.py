"""What a guest image is made of (ImageSpec) and the cache key that names it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from virtmix.errors import InventoryError

# Bumped whenever the recipe (packages, units, files written into the tree) changes, so an
# image built by an older virtmix is never reused as if it were the same.
# 2: acpid and its power-button event (ACPI shutdown works; it was always forced off).
RECIPE_VERSION = 2

# What every guest that hosts containers needs (seen working in LIBVIRT-HERE.md):
# a kernel and initramfs for direct boot, systemd, libvirt with the LXC driver (virt-ssh-
# helper, the remote end of libvirt's ssh transport, is in libvirt-daemon), sshd, udev and
# kmod for the virtio modules, busybox for test containers, iproute2 for the admin, acpid
# for the ACPI power button (stop/destroy ask a guest to shut down that way; without logind,
# which needs dbus, nothing in the image heard it).
# rsync and python3-minimal: `move` copies a container's tree into or out of a guest with
# rsync, and shifts it to another id range with the target's python3 (a guest's containers
# get ranges of its own id space); about 7 MB next to the ~450 MB tree.
BASE_PACKAGES = (
    "systemd-sysv", "linux-image-cloud-amd64", "libvirt-daemon", "libvirt-daemon-driver-lxc",
    "libvirt-clients", "openssh-server", "udev", "kmod", "busybox-static", "iproute2", "acpid",
    "rsync", "python3-minimal",
)
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:-]*$")
MIN_SIZE_KIB = 1024 * 1024  # the base tree alone is ~450 MB


@dataclass(frozen=True)
class ImageSpec:
    """Mirrors the inventory's `image: {distro, suite, packages, size}` block."""

    distro: str = "debian"
    suite: str = "bookworm"
    packages: tuple[str, ...] = ()
    size_kib: int = 4 * 1024 * 1024
    architecture: str = "amd64"
    mirror: str | None = None  # None = the host's apt sources

    def __post_init__(self) -> None:
        if self.distro != "debian":
            raise InventoryError(f"guest image distro {self.distro!r}: only 'debian' is built")
        for word, what in [(self.suite, "suite"), (self.architecture, "architecture"),
                           *((p, "package") for p in self.packages)]:
            if not _WORD.match(word):
                raise InventoryError(f"guest image {what} {word!r}: letters, digits, _.+:- only")
        if self.size_kib < MIN_SIZE_KIB:
            raise InventoryError(f"guest image size {self.size_kib} KiB: at least 1GiB needed")
        object.__setattr__(self, "packages", tuple(sorted(set(self.packages))))

    @property
    def all_packages(self) -> tuple[str, ...]:
        return tuple(sorted(set(BASE_PACKAGES) | set(self.packages)))

    def key_fields(self) -> dict:
        d = asdict(self)
        d["packages"] = list(self.all_packages)
        d["recipe"] = RECIPE_VERSION
        return d

    @property
    def cache_key(self) -> str:
        """A readable prefix and a digest of every field that changes the image."""
        blob = json.dumps(self.key_fields(), sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:16]
        return f"{self.distro}-{self.suite}-{self.architecture}-{digest}"


def spec_from_model(image, mirror: str | None = None) -> ImageSpec:
    """An ImageSpec from a model.GuestImage (None = the default image)."""
    if image is None:
        return ImageSpec(mirror=mirror)
    return ImageSpec(distro=image.distro, suite=image.suite, packages=tuple(image.packages),
                     size_kib=image.size, mirror=mirror)
