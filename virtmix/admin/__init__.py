"""The lxc-* style admin verbs, virsh interop (import) and the host doctor."""
