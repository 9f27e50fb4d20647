"""The inventory's types (pydantic v2): validation and the JSON Schema, no I/O.

Sizes are stored in KiB (libvirt's unit) and cpusets in canonical form, so later steps compare
and render them without parsing again. Every model forbids unknown keys.
"""

from __future__ import annotations

import posixpath
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
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from virtmix.inventory import strings, uris
from virtmix.inventory.cgroups import BLKIO_MAX, BLKIO_MIN, SHARES_MAX, SHARES_MIN
from virtmix.inventory.rules import (
    IFNAME_RE,
    SUITE_RE,
    Variant,
    check_hostname,
    check_ifname,
    check_name,
    check_word,
)
from virtmix.util.units import MAX_CPUS, normalize_cpuset, parse_size_kib


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
AbsPath = Annotated[str, AfterValidator(strings.check_abs_path)]
Package = Annotated[str, AfterValidator(strings.check_package)]
Word = Annotated[str, AfterValidator(strings.check_word)]
Suite = Annotated[str, AfterValidator(strings.check_suite)]
Mirror = Annotated[str, AfterValidator(strings.check_mirror)]
SshKey = Annotated[str, AfterValidator(strings.check_ssh_key)]
Hostname = Annotated[str, AfterValidator(check_hostname)]


def _uri(value: str | None, info: ValidationInfo) -> str | None:
    """A libvirt URI; `ext`, ssh `command=`/`socket=` and `-host` only when allowed."""
    if value is None:
        return value
    context = info.context or {}
    return uris.check_uri(value, context.get("allow_uri_commands"), context.get("allow_ext"))


Uri = Annotated[str, AfterValidator(_uri)]


def _file_path(value: Any, info: ValidationInfo) -> Any:
    """A file the admin names (a cloud image): absolute, or relative to the inventory
    file's directory (`image: {path: debian-12-genericcloud-amd64.qcow2}` beside site.yaml),
    made absolute here so everything downstream sees one spelling."""
    base = (info.context or {}).get("base_dir")
    if isinstance(value, str) and value and not value.startswith("/") and base:
        strings.no_control(value)
        value = posixpath.normpath(posixpath.join(base, value))
    return strings.check_abs_path(value)


FilePath = Annotated[str, AfterValidator(_file_path)]


Policy = Literal["spread", "pack"]
IfName = Annotated[str, AfterValidator(check_ifname),
                   WithJsonSchema({"type": "string", "pattern": IFNAME_RE.pattern,
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
    vcpupin: dict[Annotated[int, Field(ge=0, lt=MAX_CPUS)], CpuSet] = Field(
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
    name: IfName | None = Field(None, description="Name inside the domain (eth0, ...).")
    mac: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
    ipv4: IPv4Interface | None = Field(None, description="Static address with prefix, a.b.c.d/n.")
    gateway: IPv4Address | None = None
    dhcp: bool | None = Field(None, description="Default: true when no ipv4 is given.")
    model: Word | None = Field(None, description="Guests: NIC model (default virtio).")

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
        return strings.check_abs_path(v)


Word = Annotated[str, AfterValidator(check_word)]


class RootfsBuild(Strict):
    """A Debian tree that virtmix builds (mmdebstrap/debootstrap), caches and clones."""

    distro: Literal["debian"] = "debian"
    suite: str = Field("bookworm", pattern=SUITE_RE.pattern)
    variant: Variant = "minbase"
    components: list[Word] = Field(default_factory=lambda: ["main"], max_length=64)
    packages: list[Package] = Field(default_factory=list)
    architecture: Word | None = None
    mirror: Mirror | None = Field(None, description="Default: the host's apt sources. A plain "
                                  "http(s):// or file:// URL; no apt options.")
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

    source: AbsPath
    target: AbsPath
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
    # Placement (virtmix.converge.placement). host/hosts/group are for entries of the
    # top-level containers:/guests: sections; anti_affinity counts everywhere.
    host: Name | None = Field(None, description="Top-level entries: 'auto' (any host) or "
                              "the host it lives on.")
    hosts: list[Name] = Field(default_factory=list, description="Top-level entries: the hosts "
                              "(or host groups) virtmix may place it on.")
    group: Name | None = Field(None, description="Top-level entries: place it on a host of "
                               "this host group (hosts' `group:`).")
    placement: Policy | None = Field(None, description="spread (most free memory) or pack "
                                     "(fullest host that fits); default: settings.placement.")
    anti_affinity: Name | None = Field(None, description="Entries of one anti-affinity group "
                                       "never share a host.")
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


MAX_HOST_ID = (1 << 32) - 1  # (uid_t)-1 is never a valid id


class IdMap(Strict):
    """A container's own host id range (<idmap>): container uid/gid 0.. -> host uid/gid.."""

    uid: int = Field(description="First host uid (container root); above 0.", ge=1,
                     le=MAX_HOST_ID - 1)
    gid: int | None = Field(None, description="First host gid (default: the same as uid).",
                            ge=1, le=MAX_HOST_ID - 1)
    count: int = Field(65536, description="How many ids (65536 for a full distribution).",
                       ge=1, le=MAX_HOST_ID - 1)

    @model_validator(mode="after")
    def _fits(self) -> IdMap:
        for key, first in (("uid", self.uid), ("gid", self.gid)):
            if first is not None and first + self.count > MAX_HOST_ID:
                raise ValueError(f"{key} {first} + count {self.count} passes the last host "
                                 f"id {MAX_HOST_ID - 1}")
        return self

    @property
    def as_tuple(self) -> tuple[int, int, int, int]:
        """(container start 0, host uid, count, host gid)."""
        return (0, self.uid, self.count, self.gid if self.gid is not None else self.uid)


class Container(Common):
    """An LXC container (libvirt LXC domain)."""

    hostname: Hostname | None = None
    rootfs: Rootfs = Field(default_factory=RootfsBuild)
    init: list[str] = Field(default_factory=lambda: ["/sbin/init"], min_length=1,
                            max_length=256)
    mounts: list[Mount] = Field(default_factory=list)
    privileged: bool = Field(False, description="Run without a user namespace (not advised).")
    idmap: IdMap | None = Field(None, description="This container's host id range (default "
                                "for built trees: a range of its own, chosen from its name).")
    ssh_keys: list[SshKey] = Field(default_factory=list,
                                   description="Public keys for root, one per item.")
    root_password: Literal["locked", "generate"] = "locked"
    sshd: bool = False
    locale: Annotated[str, AfterValidator(strings.check_locale)] = "C.UTF-8"
    timezone: Annotated[str, AfterValidator(strings.check_timezone)] = "Etc/UTC"
    dns: list[IPv4Address] = Field(
        default_factory=list, description="Nameservers for the built tree's /etc/resolv.conf "
        "(default: the address of the inventory network its first interface is on, where "
        "libvirt's dnsmasq answers).")


class Disk(Strict):
    """A guest disk: a new image of `size`, or an existing image at `path`."""

    size: SizeKiB | None = None
    path: AbsPath | None = None
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

    path: FilePath | None = Field(None, description="A local base image; a relative path is "
                                  "taken from the inventory file's directory.")
    url: str | None = Field(None, description="Downloaded once (http, https, file).")
    checksum: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$",
                                 description="sha256:HEX of the file at url (required).")
    distro: Literal["debian"] = "debian"
    suite: Suite = "bookworm"
    packages: list[Package] = Field(default_factory=list)
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

    kernel: AbsPath
    initrd: AbsPath | None = None
    cmdline: str | None = None


class Guest(Common):
    """A KVM/QEMU guest; with `containers:` it is also an LXC host."""

    virt_type: Literal["kvm", "qemu"] | None = Field(None, description="Default: the host's.")
    machine: Word | None = None
    arch: Word = "x86_64"
    disks: list[Disk] = Field(default_factory=list)
    image: GuestImage | None = None
    ssh_keys: list[str] = Field(default_factory=list, description="Public keys for root "
                                "(through cloud-init's seed on a given image).")
    boot: Boot | None = None
    lxc_uri: Uri | None = Field(None, description="How to reach the guest's own libvirt.")
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

    uri: Uri = "qemu:///system"
    lxc_uri: Uri = "lxc:///system"
    virt_type: Literal["kvm", "qemu"] = "kvm"
    cpus: CpuSet | None = Field(None, description="CPUs the host has; cpusets are checked.")
    memory: SizeKiB | None = None
    cgroups: Literal["v1", "v2"] = Field(
        "v1", description="cgroup version of the host: shares are written as v2 weights on v2."
    )
    group: Name | None = Field(None, description="Host group, for entries' `group:`/`hosts:`.")
    max_domains: int | None = Field(None, ge=0, description="Placement puts no more domains "
                                    "than this on the host.")
    migration_address: str | None = Field(
        None, pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$",
        description="Where this host's QEMU listens for guests migrated to it (libvirt's "
        "migration URI tcp://ADDRESS): a hostname or IP address the sending host reaches "
        "it at. Default: libvirt's, this host's own hostname, which must then resolve on "
        "the sending host.")
    containers: dict[Name, Container] = Field(default_factory=dict)
    guests: dict[Name, Guest] = Field(default_factory=dict)


class Settings(Strict):
    storage_dir: str = Field("/var/lib/virtmix", description="Trees, images, caches.")
    mirror: Mirror | None = Field(None, description="Debian mirror; default: host apt "
                                  "sources. A plain http(s):// or file:// URL; no apt options.")
    shutdown_timeout: float = Field(30.0, ge=0, description="Seconds a guest gets to shut "
                                    "down (ACPI) on stop/destroy/apply before it is forced off.")
    placement: Policy = Field("spread", description="Default placement policy of entries "
                              "with host: auto / hosts: / group:.")
    idmap: Literal["auto", "isolated", "shared"] | None = Field(
        None, description="Id ranges of built unprivileged containers: 'isolated' (each its "
        "own), 'shared' (all 0 -> 100000) or 'auto' (the default; env VIRTMIX_IDMAP sets "
        "it): isolated where the containers' cgroups are cgroup v2, shared on a cgroup v1 "
        "host, whose one name=systemd hierarchy libvirt hands to the last container started.")

    @field_validator("storage_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Its paths go into domain XML, which libvirt resolves from its own working directory.
        if not v.startswith("/"):
            raise ValueError(f"storage_dir must be an absolute path, got {v!r}")
        return strings.check_storage_dir(v.rstrip("/") or "/")


class Inventory(Strict):
    """A site: hosts, their guests and containers, and networks."""

    site: Name | None = Field(None, description="Site name: who owns what this inventory makes "
                              "(domain metadata, network UUIDs). Default: the file's stem.")
    name: Name | None = Field(None, description="Older spelling of 'site'.")
    profiles_dir: str | None = Field(None, description="Extra profile directory.")
    templates_dir: str | None = Field(None, description="Templates overriding the shipped.")
    settings: Settings = Field(default_factory=Settings)
    networks: dict[Name, Network] = Field(default_factory=dict)
    hosts: dict[Name, Host] = Field(default_factory=dict)
    containers: dict[Name, Container] = Field(
        default_factory=dict, description="Containers virtmix places on a host (host: auto, "
        "hosts: [...], group: G).")
    guests: dict[Name, Guest] = Field(
        default_factory=dict, description="Guests virtmix places on a host.")

    @model_validator(mode="after")
    def _one_site_name(self) -> Inventory:
        if self.site and self.name and self.site != self.name:
            raise ValueError(f"'site: {self.site}' and 'name: {self.name}' disagree; 'name' is "
                             "the older spelling of 'site': keep one")
        return self


def inventory_json_schema() -> dict[str, Any]:
    """The JSON Schema editors use to check and complete inventory files."""
    schema = Inventory.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "virtmix inventory"
    return schema
