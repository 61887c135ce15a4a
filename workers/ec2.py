"""EC2 in the seed's style (`ec2:deploy`, `ec2:destroy`, `ec2:poweroff`).

Thin names for pipelines written per provider; the work is done by
workers/cloud.py, with the provider fixed to ec2.
"""
from workers import cloud

cloud.seed_style_tasks("ec2", "ec2")
