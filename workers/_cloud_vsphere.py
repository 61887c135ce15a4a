"""vSphere (vCenter's REST API) as a cloud provider.

vSphere has no size catalogue: the configured ``providers.vsphere.flavors`` are
it. It cannot inject SSH keys either; the template must authorise them.
"""
from __future__ import annotations

import logging
from typing import Any

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize

from clipboard import config
from clipboard.errors import ConfigError
from workers import _catalog
from workers._libcloud import SECRETS, api, guard
from workers._provider import CloudProvider

# The step's log names the silo the operator ran, not this helper module.
log = logging.getLogger("workers.cloud")


class VSphere(CloudProvider):
    """vSphere through libcloud's REST driver."""

    name = "vsphere"
    needs_location = True

    def make_driver(self, cfg: config.Config | None = None) -> NodeDriver:
        from libcloud.compute.drivers.vsphere import VSphere_REST_NodeDriver
        cfg = cfg or config.current()
        s = self.settings(cfg)
        host = s.get("host")
        if not host:
            raise ConfigError("providers.vsphere.host is not set (the vCenter host name)")
        user = s.get("user")
        if not user:
            raise ConfigError("providers.vsphere.user is not set")
        password = cfg.secret("providers.vsphere.password")
        SECRETS.add(password)
        driver: NodeDriver = guard(self.name, [password], lambda: VSphere_REST_NodeDriver(
            key=str(user), secret=password, host=str(host), port=int(s.get("port") or 443),
            ca_cert=s.get("ca_cert") or None))
        return driver

    def choose_size(self, driver: NodeDriver, wanted: str, s: dict[str, Any]) -> NodeSize:
        """The configured flavor named ``wanted`` (after the size aliases)."""
        wanted, _ = _catalog.alias(s, "size", wanted, self.name)
        flavors = _catalog.entries(s.get("flavors"))
        flavor = flavors.get(wanted)
        if not isinstance(flavor, dict):
            raise _catalog.unknown("size", wanted, self.name, [str(k) for k in flavors],
                                   " (define it under providers.vsphere.flavors)")
        return NodeSize(id=wanted, name=wanted, ram=int(flavor.get("ram") or 1024),
                        disk=int(flavor.get("disk") or 0), bandwidth=None,
                        price=None,  # type: ignore[arg-type]  # a flavor has no price
                        driver=driver, extra={"cpu": int(flavor.get("cpus") or 1)})

    def create_node(self, driver: NodeDriver, clipboard: dict[str, Any], s: dict[str, Any],
                    size: NodeSize, image: NodeImage, location: NodeLocation | None,
                    keys: list[str]) -> Node:
        if keys:
            log.info("vSphere cannot inject SSH keys: the template %s must authorise them "
                     "(for example through cloud-init guestinfo)", image.name)
        extra = {f"ex_{k}": s[k] for k in ("folder", "datastore", "network") if s.get(k)}
        return api(self.name, "create_node", lambda: driver.create_node(
            name=clipboard["instance"]["hostname"], image=image, size=size, location=location,
            **extra))
