"""Helpers for tests that run against the real libvirtd: cleanup, waiting, assets, XML."""

from .assets import GuestKernel, build_busybox_tree, fetch_guest_kernel
from .domains import busybox_lxc_xml, guest_qemu_xml
from .live import (
    cleanup_domains,
    cleanup_networks,
    container_init_pid,
    lxc_run,
    wait_for,
)

__all__ = [
    "GuestKernel",
    "build_busybox_tree",
    "busybox_lxc_xml",
    "cleanup_domains",
    "cleanup_networks",
    "container_init_pid",
    "fetch_guest_kernel",
    "guest_qemu_xml",
    "lxc_run",
    "wait_for",
]
