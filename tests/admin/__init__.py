"""Admin verbs, import and doctor without the daemon."""
