"""What must exist on disk before a domain is defined or started: trees, disk images, dirs.

Runs on the machine virtmix runs on; for a remote host only what needs no local files is
possible (existing trees and images are assumed to be there; nothing is created remotely).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.inventory.model import Container, Guest, RootfsBuild
from virtmix.inventory.site import Entry, Site, is_privileged
from virtmix.render.views import container_idmap, domain_view, storage_dir
from virtmix.rootfs.spec import ContainerSetup
from virtmix.util import layout
from virtmix.util.files import fsync_dir, fsync_file, write_atomic
from virtmix.util.identity import IDMAP
from virtmix.util.uris import is_local

MAPPED_ROOT_UID = IDMAP[1]
Progress = Callable[[str], None]  # one line per step of a long build


def _searchable(st: os.stat_result, uid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == uid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def ensure_traversable(tree: Path, storage: Path, uid: int = MAPPED_ROOT_UID) -> list[Path]:
    """Make every parent of tree searchable by the container's mapped root, or say which not.

    libvirt_lxc creates <tree>/.oldroot after entering the user namespace; a parent the
    mapped uid cannot search fails the start with "Timed out while reading log output"
    (docs/working-xml.md). Directories below virtmix's storage directory get o+x; others
    (the storage directory itself included) may be the admin's, so virtmix names them
    instead of changing them.
    """
    fixed = []
    for parent in reversed(tree.parents):
        st = parent.stat()
        if _searchable(st, uid):
            continue
        if storage in parent.parents:  # made by virtmix (the storage root may be the admin's)
            os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            fixed.append(parent)
            continue
        raise RootfsError(
            f"{parent} is not searchable by uid {uid}, the unprivileged container's root, so "
            f"it cannot start from {tree}",
            hint=f"chmod o+x {parent} (or move the tree), then apply again")
    return fixed


def _check_tree(entry: Entry, tree: Path) -> None:
    spec = entry.spec
    assert isinstance(spec, Container)
    if not tree.is_dir():
        raise RootfsError(f"{entry.keypath}.rootfs.path: {tree} is not a directory")
    init = tree / spec.init[0].lstrip("/")
    if not (init.exists() or init.is_symlink()):
        raise RootfsError(f"{entry.keypath}.init: {spec.init[0]} does not exist in {tree}")


def _provision(site: Site, entry: Entry, progress: Progress | None = None) -> Path:
    """A built tree (`rootfs: {distro...}`) through the rootfs subsystem."""
    try:
        from virtmix.rootfs import Storage, provision_container
        from virtmix.rootfs.from_model import setup_from_model, spec_from_model
    except ImportError as exc:  # the rootfs subsystem is optional in a partial install
        raise RootfsError(f"{entry.keypath}.rootfs: building trees is not available ({exc})",
                          hint="give rootfs: {path: ...} with an existing tree") from None
    storage = Storage(storage_dir(site))
    assert isinstance(entry.spec, Container)
    spec = spec_from_model(entry.spec.rootfs, base_dir=site.path.parent,
                           mirror=site.inventory.settings.mirror)
    privileged = is_privileged(entry)
    setup = with_cloud_seed(setup_from_model(entry.name, entry.spec, site.inventory.networks),
                            site, entry)
    # The range the definition names (views.container_idmap): the tree is made for it.
    result = provision_container(entry.name, spec, setup, storage, privileged=privileged,
                                 progress=progress, idmap=container_idmap(site, entry))
    if result.privileged != privileged:
        raise RootfsError(
            f"{entry.keypath}: its tree {result.path} was built "
            f"{'privileged' if result.privileged else 'unprivileged'}, the inventory now asks "
            f"for {'privileged' if privileged else 'unprivileged'}",
            hint=f"virtmix destroy {entry.name} --delete-rootfs, then apply again")
    return result.path


def prepare_container(site: Site, entry: Entry, progress: Progress | None = None) -> None:
    spec = entry.spec
    assert isinstance(spec, Container)
    view = domain_view(site, entry)
    local = is_local(entry.uri)
    if isinstance(spec.rootfs, RootfsBuild):
        if not local and entry.parent:
            from virtmix.nesting.ops import push_tree

            push_tree(site, entry)  # built here, copied into the guest over ssh
            return
        if not local:
            raise RootfsError(f"{entry.keypath}.rootfs: virtmix builds trees on the machine it "
                              f"runs on, not on {entry.uri}",
                              hint="build the tree there and give rootfs: {path: ...}")
        tree = _provision(site, entry, progress)
    else:
        assert view.rootfs is not None, "a container's view always names its tree"
        tree = Path(view.rootfs)
        if not local:
            return
        _check_tree(entry, tree)
    if view.idmap is not None:
        ensure_traversable(tree, Path(storage_dir(site)), view.idmap[1])


def _qemu_img_create(path: Path, fmt: str, size_kib: int, *backing: str) -> None:
    """A new image, made under a temporary name and renamed: an interrupted apply never
    leaves a half-made image that a later apply would take as complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    args = ["create", "-q", "-f", fmt, *backing, str(tmp), str(size_kib * 1024)]
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RootfsError(f"qemu-img {' '.join(args)} failed: {proc.stderr.strip()}")
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def with_cloud_seed(setup: ContainerSetup, site: Site, entry: Entry) -> ContainerSetup:
    """The container's setup with cloud-init's seed (written only into a tree that has
    cloud-init: the same user-data then serves containers and guests)."""
    from dataclasses import replace

    from virtmix.rootfs.cloudinit import seed_documents

    docs = seed_documents(entry.name, entry.uri, entry.kind, entry.spec,
                          site.inventory.networks)
    return replace(setup, cloud_seed=tuple(docs.items()))


def seed_pins_host_key(entry: Entry) -> bool:
    """Whether a guest on a given image gets a host key virtmix makes and pins: through
    cloud-init's user-data, so not when the admin's own user-data text cannot go beside
    virtmix's #cloud-config in a multipart (MIME already, a jinja template)."""
    from virtmix.rootfs.cloudinit import wraps_user_data

    spec = entry.spec
    if not isinstance(spec, Guest):
        return False
    ci = spec.cloud_init
    return bool(spec.image is not None and spec.image.given
                and not (ci is not None and isinstance(ci.user_data, str)
                         and not wraps_user_data(ci.user_data))
                and any(i.ipv4 is not None for i in spec.interfaces))


def write_seed(site: Site, entry: Entry, gdir: Path) -> None:
    """The guest's cloud-init seed ISO (rewritten from the inventory on every prepare)."""
    from virtmix.render.views import SEED_ISO
    from virtmix.rootfs.cloudinit import seed_documents, write_seed_iso

    host_key = None
    extra: tuple[str, ...] = ()
    if seed_pins_host_key(entry):
        from virtmix.images import keys
        from virtmix.images.guest import guest_address
        from virtmix.rootfs.storage import Storage

        key = gdir / "host_key"
        if not key.is_file():
            keys.make_host_key(key, entry.name)
        pub = key.with_name("host_key.pub").read_text().strip()
        storage = Storage(storage_dir(site))
        keys.pin_host_key(storage, guest_address(entry), pub)
        keys.ssh_config(storage)  # what the Ansible export and admins' ssh -F use
        host_key = (key.read_text(), pub)
        # virtmix's own key too, as on the images it builds: its ssh (and the Ansible
        # export's) reaches the guest with the pinned host key.
        extra = tuple(keys.authorized_keys(Storage(storage_dir(site))).split("\n")[:-1])
    docs = seed_documents(entry.name, entry.uri, entry.kind, entry.spec,
                          site.inventory.networks, host_key, extra)
    write_seed_iso(gdir / SEED_ISO, docs)


def prepare_guest(site: Site, entry: Entry) -> None:
    spec = entry.spec
    assert isinstance(spec, Guest)
    view = domain_view(site, entry)
    if not is_local(entry.uri):
        return  # images on a remote host are the admin's (nothing created remotely)
    if spec.boot is None and (spec.image is not None or spec.containers) and \
            (spec.image is None or not spec.image.given):
        from virtmix.images import prepare_guest as prepare_built_guest

        # A Debian image virtmix builds: cached base, overlay, kernel, initrd, host key.
        prepare_built_guest(site, entry)
        return
    gdir = Path(layout.guest_path(storage_dir(site), entry.name))
    gdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (gdir / layout.GUEST_FILES_MARKER).is_file():
        write_atomic(gdir / layout.GUEST_FILES_MARKER, b"")
    for path in (view.kernel, view.initrd):
        if path and not Path(path).is_file() and not Path(path).is_relative_to(gdir):
            raise RootfsError(f"{entry.keypath}.boot: {path} does not exist")
    image = spec.image
    by_path = {d.path: d for d in view.disks}
    root = gdir / "root.qcow2"
    if str(root) in by_path and not root.exists():
        if image is None or not image.given:
            raise RootfsError(f"{entry.keypath}.image: guest images built by virtmix are not "
                              "available in apply yet",
                              hint="give image: {path: BASE.qcow2}, or boot: {kernel, ...}")
        if image.url:
            from virtmix.images.download import fetch_image
            from virtmix.rootfs.storage import Storage

            base = fetch_image(Storage(storage_dir(site)), image.url, image.checksum or "")
        else:
            base = Path(image.path or "")
        if not base.is_file():
            raise RootfsError(f"{entry.keypath}.image.path: {base} does not exist")
        fmt = "qcow2" if base.suffix == ".qcow2" else "raw"
        _qemu_img_create(root, "qcow2", image.size, "-b", str(base), "-F", fmt)
    elif str(root) in by_path and image is not None and image.path:
        from virtmix.images.guest import check_reused_disk

        check_reused_disk(root, Path(image.path), f"{entry.keypath}.image")
    if image is not None and image.given:
        write_seed(site, entry, gdir)
    for disk, dview in zip(spec.disks, view.disks[-len(spec.disks):] if spec.disks else [],
                           strict=True):
        disk_path = Path(dview.path)
        if disk.size is not None and not disk_path.exists():
            _qemu_img_create(disk_path, disk.format, disk.size)
        elif disk.size is not None and disk.format == "qcow2":  # kept: checked, not trusted
            from virtmix.images.guest import check_reused_disk

            check_reused_disk(disk_path, None, f"{entry.keypath}.disks")
        elif disk.path is not None and not disk_path.exists():
            raise RootfsError(f"{entry.keypath}.disks: {disk_path} does not exist")


def prepare(site: Site, entry: Entry, progress: Progress | None = None) -> None:
    """Everything the entry's definition refers to, created or checked.

    progress, when given, receives one line per step of a long build (`virtmix create`
    shows them); apply runs many entries at once and passes none.
    """
    if entry.kind == "container":
        prepare_container(site, entry, progress)
    else:
        prepare_guest(site, entry)
