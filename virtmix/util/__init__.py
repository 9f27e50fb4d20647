"""Helpers that import nothing of virtmix but errors: units, identities (and the idmap
range), storage layout, files, locks, polling."""
