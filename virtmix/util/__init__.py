"""Helpers with no virtmix imports: units, identities, storage layout, shipped paths, files, locks."""
