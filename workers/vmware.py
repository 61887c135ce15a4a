"""vSphere in the seed's style (`vmware:deploy`, `vmware:destroy`, `vmware:poweroff`).

Thin names for pipelines written per provider; the work is done by
workers/cloud.py, with the provider fixed to vsphere.
"""
from workers import cloud

cloud.seed_style_tasks("vmware", "vsphere")
