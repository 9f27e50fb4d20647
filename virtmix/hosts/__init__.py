"""Facts about a host that runs containers: local or not, cgroup filesystem, a container's init."""
