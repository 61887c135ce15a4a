"""EC2 as a cloud provider: driver, image lookup by owner, client tokens, key pairs.

EC2 names are not unique, so an earlier, interrupted create is found by its
client token: derived from the deployment (hostname, deploy key and a
generation ``destroy`` bumps), sent to AWS so it refuses to start a second
instance for a retried request, and also put in a tag that is looked for first
(moto, the test server, ignores client tokens). A node is the host's only with
the ``jarvis-host=<hostname>`` tag create gives it.
"""
from __future__ import annotations

import hashlib
import logging
import re
import uuid
from typing import Any, cast

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from clipboard import config
from clipboard.errors import ConfigError, StepFailed
from clipboard.settings import CloudSettings, Ec2Settings
from workers import _catalog
from workers._libcloud import SECRETS, api, guard
from workers._node_keys import key_fingerprint
from workers._provider import GONE, CloudProvider

# The step's log names the silo the operator ran, not this helper module.
log = logging.getLogger("workers.cloud")

TOKEN_TAG = "jarvis-client-token"
HOST_TAG = "jarvis-host"


def client_token(clipboard: dict[str, Any]) -> str:
    """The EC2 idempotency token of this deployment's node (at most 64 ASCII characters).

    Derived from hostname, deploy key and the generation ``destroy`` bumps, so a
    retried create (even from the original clipboard) sends the same token, while
    a create after a destroy gets a new one (AWS would answer a reused token with
    the terminated instance). Without a deploy key a random token is used and
    kept in ``node.client_token``.
    """
    node = clipboard.get("node") or {}
    if node.get("client_token"):
        return str(node["client_token"])
    hostname = clipboard["instance"]["hostname"]
    deploy = str((clipboard.get("deploy_key") or {}).get("public_key") or "")
    if not deploy:
        return f"{hostname[:24]}-{uuid.uuid4().hex}"
    generation = int(node.get("generation") or 0)
    digest = hashlib.sha256(f"{hostname}\n{key_fingerprint(deploy)}\n{generation}".encode())
    return f"{hostname[:24]}-{digest.hexdigest()[:32]}"


def cloud_config(keys: list[str]) -> str:
    """cloud-init user data authorising the keys for root (EC2 takes one key pair only)."""
    lines = ["#cloud-config", "disable_root: false", "ssh_authorized_keys:"]
    lines += [f"  - {key}" for key in keys]
    return "\n".join(lines) + "\n"


def ensure_key_pair(driver: NodeDriver, public_key: str) -> str:
    """Import ``public_key`` as an EC2 key pair once; its name comes from its fingerprint."""
    name = f"jarvis-{key_fingerprint(public_key)[:20]}"
    existing = api("ec2", "list_key_pairs", lambda: driver.list_key_pairs())
    if any(kp.name == name for kp in existing):
        log.info("EC2 key pair %s already imported", name)
        return name
    api("ec2", "import_key_pair_from_string",
        lambda: driver.import_key_pair_from_string(name=name, key_material=public_key))
    log.info("EC2 key pair %s imported", name)
    return name


class Ec2(CloudProvider):
    """Amazon EC2 (and EC2-compatible endpoints through ``host`` / ``port``)."""

    name = "ec2"

    def make_driver(self, cfg: config.Config | None = None) -> NodeDriver:
        s = (cfg or config.current()).providers.ec2
        key = s.key.require()
        secret = s.secret.require()
        cls = cast(Any, get_driver(Provider.EC2))  # list_regions is the EC2 driver's own
        region = s.region
        if region not in cls.list_regions():
            raise ConfigError(f"providers.ec2.region {region!r} is not an EC2 region "
                              f"(for example: {', '.join(sorted(cls.list_regions())[:5])})")
        kwargs: dict[str, Any] = {"key": key, "secret": secret, "region": region,
                                  "secure": s.secure, "signature_version": s.signature_version,
                                  "timeout": s.api_timeout}
        if s.host:
            kwargs["host"] = s.host
        if s.port:
            kwargs["port"] = s.port
        SECRETS.add(secret)
        driver: NodeDriver = guard(self.name, [secret], lambda: cls(**kwargs))
        return driver

    def choose_image(self, driver: NodeDriver, wanted: str, s: CloudSettings) -> NodeImage:
        """The image by AMI id, or by name among the AMIs of ``image_owner`` or, for an alias
        written ``<owner>:<name>`` (AMI names hold no colon), of that owner; ``*`` in a
        name matches anything and the newest AMI wins."""
        ec2 = cast(Any, driver)  # ex_* filters are the EC2 driver's, unknown to NodeDriver's
        wanted, aliased = _catalog.alias(s, "image", wanted, self.name)
        s = cast(Ec2Settings, s)
        owner = s.image_owner
        if aliased and ":" in wanted:
            owner, wanted = wanted.split(":", 1)
        if wanted.startswith("ami-"):
            images = api(self.name, "list_images",
                         lambda: ec2.list_images(ex_image_ids=[wanted]))
            if not images:
                raise StepFailed(f"unknown image {wanted!r} for ec2 (no such AMI in this region)")
            return images[0]
        # A name is only trusted from the configured owner: anyone can publish an AMI named alike.
        images = api(self.name, "list_images", lambda: ec2.list_images(
            ex_owner=owner, ex_filters={"name": wanted}))
        if images:
            return max(images, key=lambda i: str(i.extra.get("creation_date") or ""))
        words = re.findall(r"[A-Za-z0-9]+", wanted) or [wanted]
        pattern = f"*{max(words, key=len).lower()}*"
        similar = api(self.name, "list_images", lambda: ec2.list_images(
            ex_owner=owner, ex_filters={"name": pattern}))
        raise _catalog.unknown("image", wanted, self.name, [str(i.name) for i in similar],
                               f" (AMI names owned by {owner}; an ami- id is accepted too)")

    def nodes_with_id(self, driver: NodeDriver, node_id: str) -> list[Node]:
        return api(self.name, "list_nodes",
                   lambda: driver.list_nodes(ex_filters={"instance-id": node_id}))

    def nodes_named(self, driver: NodeDriver, name: str) -> list[Node]:
        return api(self.name, "list_nodes", lambda: driver.list_nodes(ex_filters={"tag:Name": name}))

    def earlier_try(self, driver: NodeDriver, clipboard: dict[str, Any],
                    record: dict[str, Any]) -> Node | None:
        """The live node tagged with this deployment's client token (kept in ``record``)."""
        record["client_token"] = client_token(clipboard)
        nodes = api(self.name, "list_nodes", lambda: driver.list_nodes(
            ex_filters={f"tag:{TOKEN_TAG}": record["client_token"]}))
        found = next((n for n in nodes if n.state not in GONE), None)
        return self.ours(found, clipboard["instance"]["hostname"], "the")

    def tag_problem(self, node: Node, hostname: str) -> str | None:
        tags = (node.extra or {}).get("tags") or {}
        if tags.get(HOST_TAG) != hostname:
            return f"it has no {HOST_TAG}={hostname} tag (jarvis did not create it for {hostname})"
        return None

    def create_node(self, driver: NodeDriver, clipboard: dict[str, Any], s: CloudSettings,
                    size: NodeSize, image: NodeImage, location: NodeLocation | None,
                    keys: list[str]) -> Node:
        hostname = clipboard["instance"]["hostname"]
        token = clipboard["node"]["client_token"]
        kwargs: dict[str, Any] = {
            "name": hostname, "size": size, "image": image, "location": location,
            "ex_metadata": {TOKEN_TAG: token, HOST_TAG: hostname, "jarvis-fqdn": str(
                clipboard["instance"].get("fqdn") or hostname)},
            "ex_clienttoken": token}
        if keys:
            kwargs["ex_keyname"] = ensure_key_pair(driver, keys[0])
            kwargs["ex_userdata"] = cloud_config(keys)
        s = cast(Ec2Settings, s)
        if s.security_groups:
            kwargs["ex_security_groups"] = list(s.security_groups)
        return api(self.name, "create_node", lambda: driver.create_node(**kwargs))
