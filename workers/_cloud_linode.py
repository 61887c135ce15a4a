"""Linode (API v4) as a cloud provider.

Labels are unique at Linode, so the base class's lookup by the host's name finds
an earlier try; a node is the host's only with the ``jarvis`` tag create gives
it. Linode requires a root password with an image (``core:randpass`` makes one).
"""
from __future__ import annotations

from typing import Any, cast

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.settings import CloudSettings
from workers._libcloud import SECRETS, guard
from workers._provider import CloudProvider

LINODE_TAG = "jarvis"


class Linode(CloudProvider):
    """Linode through libcloud's API v4 driver."""

    name = "linode"
    needs_location = True

    def make_driver(self, cfg: config.Config | None = None) -> NodeDriver:
        s = (cfg or config.current()).providers.linode
        timeout = s.api_timeout
        token = s.token.require()
        SECRETS.add(token)
        cls = get_driver(Provider.LINODE)
        driver: NodeDriver = guard(self.name, [token], lambda: cls(
            key=token, api_version="4.0", timeout=timeout))
        return driver

    def tag_problem(self, node: Node, hostname: str) -> str | None:
        if LINODE_TAG not in ((node.extra or {}).get("tags") or []):
            return f"it has no {LINODE_TAG} tag (jarvis did not create it)"
        return None

    def create_node(self, driver: NodeDriver, clipboard: dict[str, Any], s: CloudSettings,
                    size: NodeSize, image: NodeImage, location: NodeLocation | None,
                    keys: list[str]) -> Node:
        password = clipboard["instance"].get("root_password")
        if not password:
            raise StepFailed("instance.root_password is not set (run core:randpass first): "
                             "Linode requires one with an image")
        # By keyword: create_node changed its argument order between libcloud releases;
        # root_pass and ex_* are the Linode driver's own, unknown to NodeDriver's signature.
        linode = cast(Any, driver)
        return guard(f"{self.name} create_node", [str(password)], lambda: linode.create_node(
            location=location, name=clipboard["instance"]["hostname"], size=size, image=image,
            root_pass=str(password), ex_authorized_keys=keys, ex_tags=[LINODE_TAG]))
