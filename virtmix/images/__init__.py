"""Guest images for KVM guests that host LXC containers: build, cache, per-guest overlay, keys.

build   mmdebstrap -> customise (recipe) -> mkfs.ext4 -d -> qcow2 base in <storage>/images/KEY
guest   per guest: qcow2 overlay over the base, kernel + initrd, config disk, host key
keys    the site ssh key, per-guest host keys pinned in virtmix's known_hosts, ssh config
"""

from __future__ import annotations

from virtmix.images.build import CachedImage, ensure_image, list_images
from virtmix.images.guest import (
    GuestFiles,
    guest_address,
    guest_dir,
    prepare_guest,
    remove_guest_files,
    remove_image,
    storage_for,
)
from virtmix.images.keys import run_ssh, ssh_argv, transport_uri
from virtmix.images.spec import ImageSpec, spec_from_model

__all__ = [
    "CachedImage", "GuestFiles", "ImageSpec", "ensure_image", "guest_address", "guest_dir",
    "list_images", "prepare_guest", "remove_guest_files", "remove_image", "run_ssh",
    "spec_from_model", "ssh_argv", "storage_for", "transport_uri",
]
