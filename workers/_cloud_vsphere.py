"""vSphere (vCenter's REST API) as a cloud provider.

vSphere has no size catalogue: the configured ``providers.vsphere.flavors`` are
it. It cannot inject SSH keys either; the template must authorise them.
"""
from __future__ import annotations

import logging
from typing import Any, cast

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize

from clipboard import config
from clipboard.errors import ConfigError
from clipboard.settings import CloudSettings, VsphereSettings
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
        s = (cfg or config.current()).providers.vsphere
        host = s.host
        if not host:
            raise ConfigError("providers.vsphere.host is not set (the vCenter host name)")
        user = s.user
        if not user:
            raise ConfigError("providers.vsphere.user is not set")
        password = s.password.require()
        SECRETS.add(password)
        driver: NodeDriver = guard(self.name, [password], lambda: VSphere_REST_NodeDriver(
            key=user, secret=password, host=host, port=s.port, ca_cert=s.ca_cert or None))
        return driver

    def choose_size(self, driver: NodeDriver, wanted: str, s: CloudSettings) -> NodeSize:
        """The configured flavor named ``wanted`` (after the size aliases)."""
        wanted, _ = _catalog.alias(s, "size", wanted, self.name)
        s = cast(VsphereSettings, s)
        flavor = s.flavors.get(wanted)
        if flavor is None:
            raise _catalog.unknown("size", wanted, self.name, list(s.flavors),
                                   " (define it under providers.vsphere.flavors)")
        return NodeSize(id=wanted, name=wanted, ram=flavor.ram, disk=flavor.disk, bandwidth=None,
                        price=None,  # type: ignore[arg-type]  # a flavor has no price
                        driver=driver, extra={"cpu": flavor.cpus})

    def create_node(self, driver: NodeDriver, clipboard: dict[str, Any], s: CloudSettings,
                    size: NodeSize, image: NodeImage, location: NodeLocation | None,
                    keys: list[str]) -> Node:
        if keys:
            log.info("vSphere cannot inject SSH keys: the template %s must authorise them "
                     "(for example through cloud-init guestinfo)", image.name)
        s = cast(VsphereSettings, s)
        chosen = {"folder": s.folder, "datastore": s.datastore, "network": s.network}
        extra: dict[str, Any] = {f"ex_{k}": v for k, v in chosen.items() if v}
        return api(self.name, "create_node", lambda: driver.create_node(
            name=clipboard["instance"]["hostname"], image=image, size=size, location=location,
            **extra))
