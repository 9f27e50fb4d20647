"""Containers inside guests: a guest's libvirt, waiting for it, verbs run in the guest over ssh."""
