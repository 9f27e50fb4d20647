"""virtmix: KVM guests and LXC containers side by side on libvirt, from one inventory.

The package reads as its data flows: inventory/ (files -> validated model) -> render/
(model -> domain XML) -> converge/ (desired vs observed -> plan -> apply) -> backend/ (the
Backend protocol; the only code that imports libvirt), with hosts/ answering questions about
the machine a domain runs on (local or over ssh, one Host interface), rootfs/ and images/
building trees and guest images, nesting/ reaching guests' libvirt, admin/ the lxc-* verbs
and cli/ the typer app. util/ holds helpers that import nothing of virtmix but errors.
tests/core/test_layers.py checks that nothing imports upward.
"""

__version__ = "0.1.0"
