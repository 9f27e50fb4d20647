"""Desired vs observed: what the site should be, what libvirt has, the plan between them, and

applying it.
"""
