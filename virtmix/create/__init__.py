"""`virtmix create`: the lxc-create workflow (one container from options, no inventory file)."""
