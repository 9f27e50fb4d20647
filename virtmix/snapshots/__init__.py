"""Snapshots and backups of domains: guests through libvirt, containers through their trees."""
