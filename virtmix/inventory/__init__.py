"""The inventory: YAML files and profiles -> one validated Site (pure: no I/O beyond reading

files).
"""
