"""The inventory's types (pydantic v2): validation and the JSON Schema, no I/O.

Sizes are stored in KiB (libvirt's unit) and cpusets in canonical form, so later steps compare
and render them without parsing again. Every model forbids unknown keys.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from virtmix.inventory.cgroups import BLKIO_MAX, BLKIO_MIN, SHARES_MAX, SHARES_MIN
from virtmix.util.units import normalize_cpuset, parse_size_kib

# Names become libvirt domain names, file names under the storage directory and hostnames:
# one conservative rule for all of them.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a name must be a string, got {value!r}")
    if len(value) > 64:
        raise ValueError(f"name {value!r} is longer than 64 characters")
    if ".." in value or not NAME_RE.match(value):
        raise ValueError(
            f"unsafe name {value!r}: use letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, no '..', at most 64 characters"
        )
    return value


def _kib(value: Any) -> int:
    return parse_size_kib(value)


def _cpuset(value: Any) -> str:
    return normalize_cpuset(value)


Name = Annotated[str, BeforeValidator(check_name)]
SizeKiB = Annotated[
    int,
    BeforeValidator(_kib),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGT](i?B)?|[kK]i?B|B)?\s*$"},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A size: 512MiB, 2GiB, 1G, or an integer number of bytes.",
        }
    ),
]
CpuSet = Annotated[
    str,
    BeforeValidator(_cpuset),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^[0-9,\-^ ]+$"}, {"type": "integer"}],
            "description": "A cpuset: '0', '0-3', '0-3,^2,8'.",
        }
    ),
]
MIN_MEMORY_KIB = 4 * 1024
IFNAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$")


def _ifname(value: str) -> str:
    if not IFNAME.match(value):
        raise ValueError("not a Linux interface name (at most 15 letters, "
                         "digits, '_', '-' or '.'; no '/' or blanks)")
    return value


IfName = Annotated[str, AfterValidator(_ifname),
                   WithJsonSchema({"type": "string", "pattern": IFNAME.pattern,
                                   "description": "A Linux interface name (15 characters)."})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CpuTune(Strict):
    """CPU placement and scheduling: <vcpu cpuset>, <cputune>."""

    cpuset: CpuSet | None = Field(None, description="CPUs the domain may use (<vcpu cpuset>).")
    shares: int | None = Field(
        None, ge=SHARES_MIN, le=SHARES_MAX,
        description="Relative CPU weight in cgroup v1 units (default 1024) (<cputune><shares>).",
    )
    period: int | None = Field(None, ge=1000, le=1000000, description="CFS period in us.")
    quota: int | None = Field(
        None, description="CPU time per period in us; -1 = no limit (<cputune><quota>)."
    )
    vcpupin: dict[int, CpuSet] = Field(
        default_factory=dict, description="Guests only: vCPU number -> host cpuset."
    )
    emulatorpin: CpuSet | None = Field(None, description="Guests only: emulator threads' cpuset.")

    @field_validator("quota")
    @classmethod
    def _quota_range(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and not 1000 <= v <= 17592186044415:
            raise ValueError("quota must be -1 (no limit) or 1000..17592186044415 microseconds")
        return v


class MemTune(Strict):
    """Memory limits beyond <memory>: <memtune>. Sizes; null removes a profile's limit."""

    hard_limit: SizeKiB | None = None
    soft_limit: SizeKiB | None = None
    swap_hard_limit: SizeKiB | None = Field(None, description="Memory plus swap.")
    min_guarantee: SizeKiB | None = Field(None, description="QEMU guests only.")


class BlkioTune(Strict):
    """Block I/O weight: <blkiotune><weight>."""

    weight: int | None = Field(None, ge=BLKIO_MIN, le=BLKIO_MAX)


CgroupBlock = Annotated[
    dict[str, Any] | list[str] | str,
    Field(
        description="Classic cgroup keys (cpu.shares, cpuset.cpus, memory.limit_in_bytes, "
        "cpu.weight, memory.max, ...) or 'lxc.cgroup.KEY = VALUE' lines; folded into "
        "cpu/memtune/blkio when the inventory is loaded."
    ),
]


class Interface(Strict):
    """A network interface on a libvirt network or an existing host bridge."""

    network: Name | None = Field(None, description="A network of this inventory or libvirt.")
    bridge: IfName | None = Field(None, description="An existing host bridge, e.g. br0.")
    name: str | None = Field(None, description="Name inside the domain (eth0, ...).")
    mac: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
    ipv4: IPv4Interface | None = Field(None, description="Static address with prefix, a.b.c.d/n.")
    gateway: IPv4Address | None = None
    dhcp: bool | None = Field(None, description="Default: true when no ipv4 is given.")
    model: str | None = Field(None, description="Guests: NIC model (default virtio).")

    @model_validator(mode="after")
    def _one_source(self) -> Interface:
        if (self.network is None) == (self.bridge is None):
            raise ValueError("an interface needs exactly one of 'network' or 'bridge'")
        return self


class RootfsPath(Strict):
    """An existing root filesystem tree, used as it is."""

    path: str = Field(description="Absolute path of an existing tree.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"rootfs path must be absolute, got {v!r}")
        return v


class RootfsBuild(Strict):
    """A Debian tree that virtmix builds (mmdebstrap/debootstrap), caches and clones."""

    distro: Literal["debian"] = "debian"
    suite: str = Field("bookworm", pattern=r"^[a-z][a-z0-9-]*$")
    variant: Literal["minbase", "buildd", "required", "important", "standard"] = "minbase"
    components: list[str] = Field(default_factory=lambda: ["main"])
    packages: list[str] = Field(default_factory=list)
    architecture: str | None = None
    mirror: str | None = Field(None, description="Default: the host's apt sources.")
    hook: str | None = Field(None, description="Site script run inside the tree after build.")


def _rootfs_kind(v: Any) -> str:
    if isinstance(v, dict):
        return "path" if "path" in v else "build"
    return "path" if isinstance(v, RootfsPath) else "build"


Rootfs = Annotated[
    Annotated[RootfsPath, Tag("path")] | Annotated[RootfsBuild, Tag("build")],
    Discriminator(_rootfs_kind),
]


class Mount(Strict):
    """A host directory bind-mounted into a container."""

    source: str
    target: str
    readonly: bool = False


class CloudInit(Strict):
    """Passed to cloud-init through the NoCloud seed (a mapping is written as #cloud-config)."""

    user_data: str | dict[str, Any] | None = None
    vendor_data: str | dict[str, Any] | None = None


class Common(Strict):
    """Settings shared by containers and guests."""

    profile: str | None = Field(None, description="Profile to start from (profiles/*.yaml).")
    description: str | None = None
    vcpus: int = Field(1, ge=1, le=4096)
    memory: SizeKiB | None = Field(None, description="Memory cap (<memory>).")
    cpu: CpuTune = Field(default_factory=CpuTune)
    memtune: MemTune = Field(default_factory=MemTune)
    blkio: BlkioTune = Field(default_factory=BlkioTune)
    cgroup: CgroupBlock | None = None
    interfaces: list[Interface] = Field(default_factory=list)
    state: Literal["running", "stopped"] = Field("running", description="Desired state.")
    autostart: bool = False
    cloud_init: CloudInit | None = Field(
        None, description="user_data / vendor_data for cloud-init's NoCloud seed (cloud "
        "images, and built trees that contain cloud-init).")

    @field_validator("memory")
    @classmethod
    def _min_memory(cls, v: int | None) -> int | None:
        if v is not None and v < MIN_MEMORY_KIB:
            raise ValueError(f"memory of {v} KiB is too small (at least 4MiB; sizes need a "
                             "unit such as 512MiB, a bare number means bytes)")
        return v


class Container(Common):
    """An LXC container (libvirt LXC domain)."""

    hostname: str | None = None
    rootfs: Rootfs = Field(default_factory=RootfsBuild)
    init: list[str] = Field(default_factory=lambda: ["/sbin/init"], min_length=1)
    mounts: list[Mount] = Field(default_factory=list)
    privileged: bool = Field(False, description="Run without a user namespace (not advised).")
    ssh_keys: list[str] = Field(default_factory=list, description="Public keys for root.")
    root_password: Literal["locked", "generate"] = "locked"
    sshd: bool = False
    locale: str = "C.UTF-8"
    timezone: str = "Etc/UTC"
    dns: list[IPv4Address] = Field(
        default_factory=list, description="Nameservers for the built tree's /etc/resolv.conf "
        "(default: the address of the inventory network its first interface is on, where "
        "libvirt's dnsmasq answers).")


class Disk(Strict):
    """A guest disk: a new image of `size`, or an existing image at `path`."""

    size: SizeKiB | None = None
    path: str | None = None
    format: Literal["qcow2", "raw"] = "qcow2"
    bus: Literal["virtio", "sata", "scsi", "ide"] = "virtio"

    @model_validator(mode="after")
    def _size_or_path(self) -> Disk:
        if (self.size is None) == (self.path is None):
            raise ValueError("a disk needs exactly one of 'size' (new image) or 'path'")
        return self


class GuestImage(Strict):
    """The guest's root disk: built by virtmix from Debian, or a base image the admin names
    (a local `path`, or a `url` downloaded once into the storage cache), e.g. a cloud image."""

    path: str | None = None
    url: str | None = Field(None, description="Downloaded once (http, https, file).")
    checksum: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$",
                                 description="sha256:HEX of the file at url (required).")
    distro: Literal["debian"] = "debian"
    suite: str = "bookworm"
    packages: list[str] = Field(default_factory=list)
    size: SizeKiB = Field(default=4 * 1024 * 1024)

    @model_validator(mode="after")
    def _one_source(self) -> GuestImage:
        if self.path and self.url:
            raise ValueError("an image has one of 'path' or 'url', not both")
        if self.url and not self.checksum:
            raise ValueError("'url' needs 'checksum: sha256:HEX' (a download is verified)")
        if self.url and not self.url.startswith(("http://", "https://", "file://")):
            raise ValueError(f"url {self.url!r}: expected http://, https:// or file://")
        return self

    @property
    def given(self) -> bool:
        """A base image the admin provides (a file or a download), not one virtmix builds."""
        return bool(self.path or self.url)


class Boot(Strict):
    """Direct kernel boot."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


class Guest(Common):
    """A KVM/QEMU guest; with `containers:` it is also an LXC host."""

    virt_type: Literal["kvm", "qemu"] | None = Field(None, description="Default: the host's.")
    machine: str | None = None
    arch: str = "x86_64"
    disks: list[Disk] = Field(default_factory=list)
    image: GuestImage | None = None
    ssh_keys: list[str] = Field(default_factory=list, description="Public keys for root "
                                "(through cloud-init's seed on a given image).")
    boot: Boot | None = None
    lxc_uri: str | None = Field(None, description="How to reach the guest's own libvirt.")
    containers: dict[Name, Container] = Field(default_factory=dict)


class DhcpRange(Strict):
    start: IPv4Address
    end: IPv4Address


class Network(Strict):
    """A libvirt network on one host."""

    host: Name
    mode: Literal["isolated", "nat", "bridge"] = "isolated"
    bridge: IfName | None = None
    ipv4: IPv4Interface | None = Field(None, description="The host's address, a.b.c.d/n.")
    dhcp: bool | DhcpRange = False

    @model_validator(mode="after")
    def _mode_needs(self) -> Network:
        if self.mode == "bridge" and not self.bridge:
            raise ValueError("mode 'bridge' needs 'bridge': the name of an existing host bridge")
        if self.dhcp and self.ipv4 is None:
            raise ValueError("dhcp needs 'ipv4' (the network's own address)")
        return self


class Host(Strict):
    """A libvirt host: where its guests and containers are defined."""

    uri: str = "qemu:///system"
    lxc_uri: str = "lxc:///system"
    virt_type: Literal["kvm", "qemu"] = "kvm"
    cpus: CpuSet | None = Field(None, description="CPUs the host has; cpusets are checked.")
    memory: SizeKiB | None = None
    cgroups: Literal["v1", "v2"] = Field(
        "v1", description="cgroup version of the host: shares are written as v2 weights on v2."
    )
    containers: dict[Name, Container] = Field(default_factory=dict)
    guests: dict[Name, Guest] = Field(default_factory=dict)


class Settings(Strict):
    storage_dir: str = Field("/var/lib/virtmix", description="Trees, images, caches.")
    mirror: str | None = Field(None, description="Debian mirror; default: host apt sources.")

    @field_validator("storage_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Its paths go into domain XML, which libvirt resolves from its own working directory.
        if not v.startswith("/"):
            raise ValueError(f"storage_dir must be an absolute path, got {v!r}")
        return v.rstrip("/") or "/"


class Inventory(Strict):
    """A site: hosts, their guests and containers, and networks."""

    name: str | None = Field(None, description="Site name, recorded in domain metadata.")
    profiles_dir: str | None = Field(None, description="Extra profile directory.")
    templates_dir: str | None = Field(None, description="Templates overriding the shipped.")
    settings: Settings = Field(default_factory=Settings)
    networks: dict[Name, Network] = Field(default_factory=dict)
    hosts: dict[Name, Host] = Field(default_factory=dict)


def inventory_json_schema() -> dict[str, Any]:
    """The JSON Schema editors use to check and complete inventory files."""
    schema = Inventory.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "virtmix inventory"
    return schema
