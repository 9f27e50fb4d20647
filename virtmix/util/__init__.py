"""Helpers that import nothing of virtmix: units, identities, storage layout, files, locks."""
