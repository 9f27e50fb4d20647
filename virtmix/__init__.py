"""virtmix: KVM guests and LXC containers side by side on libvirt, from one inventory.

The package reads as its data flows: inventory/ (files -> validated model) -> render/
(model -> domain XML) -> converge/ (desired vs observed -> plan -> apply) -> backend/ (the
only code that imports libvirt), with hosts/ answering questions about a host (local or over
ssh), rootfs/ and images/ building trees and guest images, admin/ the lxc-* verbs and cli/
the typer app. util/ holds helpers that import nothing of virtmix.
"""

__version__ = "0.1.0"
