"""Hand-off to the tools admins use next: the site as an Ansible inventory."""
