"""Per-guest files: the qcow2 overlay over the cached base, kernel, and an initrd of its own.

Layout (the paths views.guest_view renders):
  <storage>/guests/NAME/root.qcow2    overlay, backing file = the cached (or given) base
  <storage>/guests/NAME/vmlinuz       copied from the cache entry (direct kernel boot)
  <storage>/guests/NAME/initrd.img    the image's initramfs + this guest's own files
                                      (hostname, addresses, ssh keys) appended as a cpio
  <storage>/guests/NAME/host_key{,.pub}  this guest's ssh host key, pinned in known_hosts
  <storage>/guests/NAME/guest.json    what was made, from which image
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from virtmix.errors import RootfsError, VirtmixError
from virtmix.images import build, keys
from virtmix.images.build import CachedImage, Progress, ensure_image
from virtmix.images.spec import spec_from_model
from virtmix.inventory.model import Guest
from virtmix.inventory.site import Entry, Site
from virtmix.rootfs.storage import Storage, remove_tree
from virtmix.util.files import fsync_dir, fsync_file, write_atomic
from virtmix.util.identity import mac_address
from virtmix.util.layout import GUESTS_DIR

MARKER = ".virtmix-guest"
STATE = "guest.json"


@dataclass(frozen=True)
class GuestFiles:
    """What prepare_guest made or found for one guest."""

    name: str
    dir: Path
    address: str
    image_key: str | None  # None for an admin's base image
    image_cached: bool  # the cache entry existed before this call
    image_seconds: float  # build time when it was built now
    created: bool  # the overlay was made by this call


def storage_for(site: Site) -> Storage:
    return Storage(site.inventory.settings.storage_dir)


def guest_dir(storage: Storage, name: str) -> Path:
    return storage.root / GUESTS_DIR / name


def guest_address(entry: Entry) -> str:
    """Where the host reaches the guest: lxc_uri's host, else its first static address."""
    spec = entry.spec
    assert isinstance(spec, Guest)
    if spec.lxc_uri:
        host = urlsplit(spec.lxc_uri).hostname
        if host:
            return host
    for iface in spec.interfaces:
        if iface.ipv4 is not None:
            return str(iface.ipv4.ip)
    raise RootfsError(f"guest {entry.name}: no static ipv4 address to reach it at")


def _network_files(entry: Entry) -> dict[str, str]:
    out = {}
    for i, iface in enumerate(entry.spec.interfaces):
        mac = iface.mac or mac_address(entry.uri, entry.name, i)
        lines = ["[Match]", f"MACAddress={mac}", "", "[Network]"]
        dhcp = iface.dhcp if iface.dhcp is not None else iface.ipv4 is None
        if iface.ipv4 is not None:
            lines.append(f"Address={iface.ipv4}")
        if iface.gateway is not None:
            lines.append(f"Gateway={iface.gateway}")
        lines.append(f"DHCP={'ipv4' if dhcp else 'no'}")
        out[f"10-virtmix-eth{i}.network"] = "\n".join(lines) + "\n"
    return out


def _config_initrd(storage: Storage, entry: Entry, gdir: Path, base_initrd: Path,
                   host_pub: str) -> None:
    """Write gdir/initrd.img: the image's initramfs plus a cpio of this guest's own files.

    The kernel unpacks concatenated cpio archives in order, so the appended /virtmix/...
    lands in the initramfs, whose init-bottom hook hands it to the real system (recipe.py).
    Rewritten (atomically) only when the inventory or the base initramfs changed.
    """
    files = {
        "hostname": entry.name + "\n",
        "authorized_keys": keys.authorized_keys(storage),
        "ssh_host_ed25519_key": (gdir / "host_key").read_text(),
        "ssh_host_ed25519_key.pub": host_pub + "\n",
        "virtmix.json": json.dumps({"guest": entry.name, "host": entry.host}) + "\n",
    }
    net = _network_files(entry)
    st = base_initrd.stat()
    # Only a hash of what went in: the files include the guest's private host key.
    digest = hashlib.sha256(json.dumps([files, net, str(base_initrd), st.st_size,
                                        st.st_mtime], sort_keys=True).encode()).hexdigest()
    stamp, dest = gdir / "config.json", gdir / "initrd.img"
    if dest.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return
    with tempfile.TemporaryDirectory(prefix="virtmix-cfg-") as tmp:
        src = Path(tmp) / "virtmix"
        (src / "network").mkdir(parents=True)
        os.chmod(src, 0o700)
        for name, text in files.items():
            (src / name).write_text(text)
            os.chmod(src / name, 0o600)
        for name, text in net.items():
            (src / "network" / name).write_text(text)
        listing = subprocess.run(["find", "virtmix"], cwd=tmp, capture_output=True,
                                 text=True, check=True).stdout
        res = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tmp,
                             input=listing.encode(), capture_output=True)
        if res.returncode != 0:
            raise RootfsError(f"cpio of {entry.name}'s config failed: {res.stderr.decode()}")
    base = base_initrd.read_bytes()
    pad = b"\0" * (-len(base) % 4)  # each archive starts 4-byte aligned
    # Created 0600 from the first byte: it carries the guest's private host key (a file
    # chmod-ed after open could be opened by another user in between, and read later).
    write_atomic(dest, base + pad + res.stdout, mode=0o600)
    write_atomic(stamp, digest.encode(), mode=0o600)


def check_reused_disk(path: Path, base: Path | None, where: str) -> None:
    """A guest disk apply finds already there is checked before it is used again: its
    qcow2 metadata (`qemu-img check`) and, for an overlay, that it still sits on `base`.
    A bad one is an error naming the file (never silently replaced: it holds the guest)."""
    res = subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(path)], capture_output=True,
                         text=True)
    if res.returncode not in (0, 3):  # 3: leaked clusters only, harmless
        raise RootfsError(f"{where}: the kept disk {path} is damaged (qemu-img check exit "
                          f"{res.returncode}: {(res.stderr or res.stdout).strip()[-300:]})",
                          hint=f"virtmix destroy {path.parent.name} (deletes its disks), then "
                               "apply again")
    if base is None:
        return
    info = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                          capture_output=True, text=True)
    try:
        backing = json.loads(info.stdout).get("backing-filename")
    except ValueError:
        backing = None
    if backing is not None and Path(backing) != Path(base):
        raise RootfsError(f"{where}: the kept disk {path} is an overlay of {backing}, the "
                          f"inventory now names {base}",
                          hint=f"virtmix destroy {path.parent.name} (deletes its disks), then "
                               "apply again")


def _qemu_img(*args: str) -> None:
    res = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RootfsError(f"qemu-img {' '.join(args)} failed: {res.stderr.strip()}")


def _base_format(path: Path) -> str:
    res = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RootfsError(f"guest base image {path}: {res.stderr.strip()}")
    return json.loads(res.stdout)["format"]


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size and \
            dest.stat().st_mtime >= src.stat().st_mtime:
        return
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def prepare_guest(site: Site, entry: Entry, progress: Progress | None = None) -> GuestFiles:
    """Make (or find) everything the guest's domain XML points at. Idempotent."""
    spec = entry.spec
    assert isinstance(spec, Guest)
    storage = storage_for(site)
    storage.ensure()
    gdir = guest_dir(storage, entry.name)
    address = guest_address(entry)
    with storage.lock(f"guest-{entry.name}"):
        if gdir.exists() and not (gdir / MARKER).is_file():
            raise RootfsError(f"{gdir}: exists and virtmix did not create it")
        gdir.mkdir(mode=0o711, parents=True, exist_ok=True)
        write_atomic(gdir / MARKER, (entry.name + "\n").encode())
        image: CachedImage | None = None
        if spec.image is not None and spec.image.path:
            base, fmt = Path(spec.image.path), _base_format(Path(spec.image.path))
        else:
            image = ensure_image(spec_from_model(spec.image, site.inventory.settings.mirror),
                                 storage, progress)
            base, fmt = image.base, "qcow2"
            _copy_if_changed(image.kernel, gdir / "vmlinuz")
        created = not (gdir / "root.qcow2").is_file()
        if created:
            _qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt,
                      str(gdir / "root.qcow2.tmp"))
            fsync_file(gdir / "root.qcow2.tmp")
            os.replace(gdir / "root.qcow2.tmp", gdir / "root.qcow2")
            fsync_dir(gdir)
        else:  # reused (kept by destroy --keep-disks, or a crash): checked, not trusted
            check_reused_disk(gdir / "root.qcow2", base, entry.keypath)
        for i, disk in enumerate(spec.disks):
            path = gdir / f"disk{i}.{disk.format}"
            if disk.path is None and not path.exists():
                tmp = path.with_name(f".{path.name}.part")
                _qemu_img("create", "-q", "-f", disk.format, str(tmp), f"{disk.size}K")
                fsync_file(tmp)
                os.replace(tmp, path)
                fsync_dir(gdir)
        pub_path = gdir / "host_key.pub"
        if created or not pub_path.is_file():
            # A new disk is a new machine: it gets a new host key, pinned before first boot.
            keys.make_host_key(gdir / "host_key", entry.name)
        host_pub = pub_path.read_text().strip()
        keys.pin_host_key(storage, address, host_pub)
        if image is not None:
            _config_initrd(storage, entry, gdir, image.initrd, host_pub)
        state = {"virtmix": 1, "name": entry.name, "address": address, "base": str(base),
                 "image": image.key if image else None, "host_key": host_pub}
        if created:
            state["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        old = _read_state(gdir)
        write_atomic(gdir / STATE, json.dumps({**old, **state}, indent=2,
                                              sort_keys=True).encode(), mode=0o600)
    return GuestFiles(entry.name, gdir, address, image.key if image else None,
                      image.cached if image else True, image.seconds if image else 0.0,
                      created)


def ensure_pinned(storage: Storage, entry: Entry) -> None:
    """Pin the guest's host key (made by prepare_guest) at its current address."""
    pub = guest_dir(storage, entry.name) / "host_key.pub"
    try:
        address = guest_address(entry)
        line = pub.read_text().strip()
    except (OSError, RootfsError):
        return  # not made by virtmix: the admin's own ssh setup applies
    keys.pin_host_key(storage, address, line)


def _read_state(gdir: Path) -> dict:
    try:
        return json.loads((gdir / STATE).read_text())
    except (OSError, ValueError):
        return {}


def remove_guest_files(site: Site, name: str) -> bool:
    """Delete a guest's directory (overlay, keys, initrd) and its pin. False if none."""
    return remove_guest_dir(storage_for(site), name)


def remove_guest_dir(storage: Storage, name: str) -> bool:
    """remove_guest_files for a storage directory (destroy knows only the domain's paths)."""
    gdir = guest_dir(storage, name)
    if not os.path.lexists(gdir):
        return False
    state = _read_state(gdir)
    with storage.lock(f"guest-{name}"):
        try:
            remove_tree(storage, gdir, gdir.parent, MARKER)
        except VirtmixError as e:
            raise RootfsError(f"guest {name}: {e}") from e
    if state.get("address"):
        keys.unpin_host_key(storage, state["address"])
    return True


def remove_image(storage: Storage, key: str) -> None:
    """Delete a cached image; refused while a guest overlay still uses it as backing file."""
    build.remove_image(storage, key, guests_using(storage, key))


def guests_using(storage: Storage, key: str) -> list[str]:
    root = storage.root / GUESTS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _read_state(p).get("image") == key)
