"""Build guest images into the cache: mmdebstrap -> customise -> mkfs.ext4 -d -> qcow2 base.

No loop mounts: the root filesystem is written from the tree by `mkfs.ext4 -d`, then
converted to a compressed-free, sparse qcow2 that every guest of the spec uses as the
backing file of its own overlay. An entry is complete iff its image.json exists; builds
run in a hidden directory under a lock and are renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import ConflictError, NotFoundError, RootfsError, VirtmixError
from virtmix.images.recipe import (
    INITRAMFS_HOOK,
    INITRAMFS_HOOK_PATH,
    ROOT_LABEL,
    customise_image_tree,
)
from virtmix.images.spec import ImageSpec
from virtmix.rootfs.build import run_logged
from virtmix.rootfs.sources import resolve_sources
from virtmix.rootfs.storage import Storage, remove_tree
from virtmix.util.files import fsync_dir, sync_filesystem, write_atomic

Progress = Callable[[str], None]
META = "image.json"
BUILD_MARKER = ".virtmix-image-build"


@dataclass(frozen=True)
class CachedImage:
    """A complete cache entry: a qcow2 base and the kernel + initramfs to boot it."""

    key: str
    path: Path
    cached: bool  # True when it was already there (a cache hit)
    seconds: float  # build time (0 on a hit)

    @property
    def base(self) -> Path:
        return self.path / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def meta(self) -> dict:
        return json.loads((self.path / META).read_text())


def images_root(storage: Storage) -> Path:
    return storage.root / "images"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise RootfsError(f"{tool} not found: guest images need it",
                          hint=f"apt-get install {package} (or run scripts/setup-host.sh)")
    return path


def _run(cmd: list[str], log: Path, what: str) -> None:
    run_logged(cmd, log, None, what, activity=f"image build ({what})")


def _bootstrap(spec: ImageSpec, tree: Path, log: Path, progress: Progress | None) -> None:
    _need("mmdebstrap", "mmdebstrap")
    src = resolve_sources(spec.suite, ("main",), spec.mirror)
    # The initramfs hook must be in place before the kernel package builds the initramfs.
    hook = log.parent / "initramfs-hook"
    hook.write_text(INITRAMFS_HOOK)
    dest = f'"$1/{INITRAMFS_HOOK_PATH}"'
    setup = f'mkdir -p "$(dirname {dest})" && install -m 0755 {hook} {dest}'
    # A private mount namespace: mounts mmdebstrap makes inside the tree die with it.
    cmd = ["unshare", "--mount", "--propagation", "private", "--",
           "mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase",
           f"--architectures={spec.architecture}", f"--include={','.join(spec.all_packages)}",
           f"--setup-hook={setup}", spec.suite, str(tree), *src.lines]
    run_logged(cmd, log, progress, f"mmdebstrap {spec.suite} (guest image)",
               activity=f"image build (mmdebstrap {spec.suite})")


def _kernel(tree: Path, dest: Path) -> str:
    """Copy the newest kernel and its initramfs out of the tree for direct kernel boot."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RootfsError(f"{tree}/boot: no kernel; is a linux-image package in the image?")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = tree / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise RootfsError(f"{initrd}: missing (initramfs-tools did not run?)")
    shutil.copyfile(kernels[-1], dest / "vmlinuz")
    shutil.copyfile(initrd, dest / "initrd.img")
    return version


def _disk(tree: Path, spec: ImageSpec, dest: Path, log: Path) -> None:
    raw = dest / "root.raw"
    with open(raw, "wb") as f:
        f.truncate(spec.size_kib * 1024)  # sparse
    _run([_need("mkfs.ext4", "e2fsprogs"), "-q", "-F", "-L", ROOT_LABEL, "-d", str(tree),
          str(raw)], log, "mkfs.ext4 -d (guest root filesystem)")
    _run([_need("qemu-img", "qemu-utils"), "convert", "-f", "raw", "-O", "qcow2", str(raw),
          str(dest / "base.qcow2")], log, "qemu-img convert")
    raw.unlink()


def _make(spec: ImageSpec, tmp: Path, progress: Progress | None) -> dict:
    t0 = time.monotonic()
    tree, log = tmp / "tree", tmp / "build.log"
    if progress:
        progress(f"building guest image {spec.cache_key} (mmdebstrap {spec.suite})")
    _bootstrap(spec, tree, log, progress)
    customise_image_tree(tree)
    version = _kernel(tree, tmp)
    if progress:
        progress("writing the root filesystem (mkfs.ext4 -d) and the qcow2 base")
    _disk(tree, spec, tmp, log)
    shutil.rmtree(tree)
    return {"virtmix": 1, "key": spec.cache_key, "spec": spec.key_fields(),
            "kernel": version, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - t0, 1)}


def _checked(image: CachedImage) -> CachedImage:
    """A cache hit is reused only whole: its metadata reads, its base, kernel and initrd are
    there and not empty (the marker is written after a sync, older entries were not)."""
    try:
        json.loads((image.path / META).read_text())
        ok = all(p.stat().st_size > 0 for p in (image.base, image.kernel, image.initrd))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise RootfsError(f"cached guest image {image.path} is incomplete (its metadata, base "
                          "image, kernel or initrd is missing or empty)",
                          hint=f"`virtmix image rm {image.key}` (or delete {image.path}), "
                               "then apply again to rebuild it")
    return image


def ensure_image(spec: ImageSpec, storage: Storage,
                 progress: Progress | None = None) -> CachedImage:
    """The cached image of spec, built first when missing (locked: one build per key)."""
    root = images_root(storage)
    final = root / spec.cache_key
    if (final / META).is_file():
        return _checked(CachedImage(spec.cache_key, final, True, 0.0))
    storage.ensure()
    root.mkdir(mode=0o711, exist_ok=True)
    with storage.lock(f"image-{spec.cache_key}"):
        if (final / META).is_file():  # a concurrent build finished it meanwhile
            return _checked(CachedImage(spec.cache_key, final, True, 0.0))
        for stale in root.glob(f".build-{spec.cache_key}-*"):  # builds killed before
            with contextlib.suppress(OSError, VirtmixError):
                remove_tree(storage, stale, root, BUILD_MARKER)
        tmp = root / f".build-{spec.cache_key}-{os.getpid()}"
        tmp.mkdir(mode=0o711)
        write_atomic(tmp / BUILD_MARKER, (spec.cache_key + "\n").encode())
        try:
            meta = _make(spec, tmp, progress)
            sync_filesystem(tmp)  # the image on disk before META says it is complete
            write_atomic(tmp / META,
                         (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
            os.rename(tmp, final)  # atomic: complete or absent
            fsync_dir(root)
        except BaseException:
            with contextlib.suppress(OSError, VirtmixError):
                remove_tree(storage, tmp, root, BUILD_MARKER)
            raise
    return CachedImage(spec.cache_key, final, False, meta["seconds"])


def list_images(storage: Storage) -> list[CachedImage]:
    root = images_root(storage)
    if not root.is_dir():
        return []
    return [CachedImage(p.name, p, True, 0.0) for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p / META).is_file()]


def prune_leftovers(storage: Storage) -> list[str]:
    """Delete what killed builds left (hidden .build-* dirs whose build lock is free)."""
    root = images_root(storage)
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.glob(".build-*")):
        key = p.name[len(".build-"):].rsplit("-", 1)[0]
        try:
            with storage.lock(f"image-{key}", wait=False):
                remove_tree(storage, p, root, BUILD_MARKER)
                removed.append(p.name)
        except ConflictError:
            continue  # a build is running: not a leftover
    return removed


def remove_image(storage: Storage, key: str, users: list[str]) -> None:
    """Delete a cache entry; refused while a guest overlay still uses it as backing file
    (`users`: images.guest.remove_image finds them, this module knows no guests)."""
    path = images_root(storage) / key
    if "/" in key or key in ("", ".", "..") or not path.is_dir():
        raise NotFoundError(f"no cached image {key!r} in {images_root(storage)}",
                            hint="virtmix image ls")
    if users:
        raise RootfsError(f"image {key} is the base of guest(s) {', '.join(users)}; "
                          "destroy them first")
    with storage.lock(f"image-{key}"):
        remove_tree(storage, path, images_root(storage), META)
