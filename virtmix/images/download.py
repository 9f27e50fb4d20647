"""Base images named by `image: {url, checksum}`: downloaded once into the storage cache.

The file is kept as STORAGE/images/downloads/<sha256>.<ext>: named by its checksum, so two
guests (or two inventories) naming the same image share one copy, and a changed checksum is
a new download. It is streamed to a temporary name, hashed on the way, fsynced and renamed
only when the sha256 matches; a mismatch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from virtmix.errors import RootfsError
from virtmix.rootfs.storage import Storage

DOWNLOADS = "images/downloads"


def cached_path(storage: Storage, url: str, checksum: str) -> Path:
    digest = checksum.partition(":")[2]
    name = Path(urlsplit(url).path).name
    ext = ".qcow2" if name.endswith(".qcow2") else ".raw" if name.endswith((".raw", ".img")) \
        else Path(name).suffix
    return storage.root / DOWNLOADS / f"{digest}{ext}"


def fetch_image(storage: Storage, url: str, checksum: str, *, timeout: float = 60) -> Path:
    """The cached file for url (downloading it when absent); RootfsError on any failure."""
    dest = cached_path(storage, url, checksum)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    want = checksum.partition(":")[2]
    with storage.lock(f"download-{want[:16]}"):
        if dest.is_file():  # another apply fetched it while we waited
            return dest
        tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
        sha = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            raise RootfsError(f"downloading {url}: {exc}") from None
        if sha.hexdigest() != want:
            tmp.unlink(missing_ok=True)
            raise RootfsError(f"downloading {url}: sha256 is {sha.hexdigest()}, the inventory "
                              f"says {want}", hint="check image.checksum (sha256:HEX)")
        os.replace(tmp, dest)
    return dest
