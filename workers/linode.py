"""Linode in the seed's style (`linode:deploy`, `linode:destroy`, `linode:poweroff`).

Thin names for pipelines written per provider; the work is done by
workers/cloud.py, with the provider fixed to linode.
"""
from workers import cloud

cloud.seed_style_tasks("linode", "linode")
