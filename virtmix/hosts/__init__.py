"""Facts about a host where containers run: is a URI local, the cgroup filesystem, a container's

init pid.
"""
