"""The inventory: YAML files and profiles -> one validated Site (no I/O beyond reading files)."""
