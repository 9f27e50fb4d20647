"""virtmix for machines and dashboards: Prometheus metrics and drift events.

metrics.py serves `virtmix metrics`, events.py `virtmix watch`; cgroup_stats.py reads the
figures of containers (whose LXC driver has no bulk statistics call) from their cgroups.
"""
