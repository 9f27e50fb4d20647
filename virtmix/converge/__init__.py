"""Desired vs observed: what the site should be, what libvirt has, the plan between, applying it."""
