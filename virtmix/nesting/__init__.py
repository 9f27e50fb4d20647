"""Containers inside guests: reaching a guest's libvirt, waiting for it, verbs that run in the

guest over ssh.
"""
