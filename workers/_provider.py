"""What a node provider is: the protocol the node steps call, and the base of the clouds.

``NodeProvider`` is what ``node:create`` / ``poweroff`` / ``destroy`` hand a
clipboard to: the local provider (workers/local.py, a module whose tasks fit it)
or a cloud provider with its name fixed (``cloud.Steps``).

``CloudProvider`` is the base of the libcloud providers (workers/_cloud_ec2.py,
_cloud_linode.py, _cloud_vsphere.py). It holds what they share: choosing size,
image and location through the catalog (workers/_catalog.py), finding nodes by
id or name, and the ownership check: a node is this host's only when it is
named after the host and carries the provider's jarvis tag (``tag_problem``).
A subclass builds its driver, creates its node, and overrides the lookups its
API does better (EC2 filters server-side and finds an earlier try by token).
"""
from __future__ import annotations

from typing import Any, Protocol

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.settings import CloudSettings
from workers import _catalog
from workers._libcloud import api

GONE = {NodeState.TERMINATED}


class NodeProvider(Protocol):
    """The node steps of one provider, each taking and returning the whole clipboard."""

    def deploy(self, clipboard: dict[str, Any]) -> dict[str, Any]: ...

    def poweroff(self, clipboard: dict[str, Any]) -> dict[str, Any] | None: ...

    def destroy(self, clipboard: dict[str, Any]) -> dict[str, Any] | None: ...


def addresses(node: Node) -> tuple[str | None, str | None, str | None]:
    """The node's public IPv4, public IPv6 and private IPv4 as its provider reports them."""
    public = [str(ip) for ip in node.public_ips or [] if ip]
    private = [str(ip) for ip in node.private_ips or [] if ip]
    ipv4 = next((ip for ip in public if ":" not in ip), None)
    ipv6 = next((ip for ip in public if ":" in ip), None)
    extra_v6 = str((node.extra or {}).get("ipv6") or "")  # Linode: "2600:3c00::1/128"
    if ipv6 is None and ":" in extra_v6:
        ipv6 = extra_v6.split("/")[0]
    return ipv4, ipv6, next((ip for ip in private if ":" not in ip), None)


class CloudProvider:
    """One libcloud provider; subclasses set ``name`` and implement ``make_driver`` and
    ``create_node``."""

    name = ""
    needs_location = False  # EC2 picks an availability zone itself; the others cannot

    def settings(self, cfg: config.Config | None = None) -> CloudSettings:
        """``providers.<name>`` from the configuration."""
        found: CloudSettings = getattr((cfg or config.current()).providers, self.name)
        return found

    def make_driver(self, cfg: config.Config | None = None) -> NodeDriver:
        """A driver built from the config, arguments by keyword; a missing credential is a
        ConfigError naming the key and its environment variable."""
        raise NotImplementedError

    def create_node(self, driver: NodeDriver, clipboard: dict[str, Any], s: CloudSettings,
                    size: NodeSize, image: NodeImage, location: NodeLocation | None,
                    keys: list[str]) -> Node:
        """Create the host's node (``clipboard["node"]`` already holds its record)."""
        raise NotImplementedError

    # ---- size, image, location -----------------------------------------------------------

    def choose_size(self, driver: NodeDriver, wanted: str, s: CloudSettings) -> NodeSize:
        wanted, _ = _catalog.alias(s, "size", wanted, self.name)
        return _catalog.listed_size(driver, self.name, wanted)

    def choose_image(self, driver: NodeDriver, wanted: str, s: CloudSettings) -> NodeImage:
        wanted, _ = _catalog.alias(s, "image", wanted, self.name)
        return _catalog.listed_image(driver, self.name, wanted)

    def choose_location(self, driver: NodeDriver, wanted: str | None,
                        s: CloudSettings) -> NodeLocation | None:
        return _catalog.listed_location(driver, self.name, wanted, self.needs_location, s)

    # ---- finding nodes -------------------------------------------------------------------

    def nodes_with_id(self, driver: NodeDriver, node_id: str) -> list[Node]:
        """Nodes among which the one with ``node_id`` is (all of them, unless the API filters)."""
        return api(self.name, "list_nodes", lambda: driver.list_nodes())

    def nodes_named(self, driver: NodeDriver, name: str) -> list[Node]:
        """Nodes among which those named ``name`` are (all of them, unless the API filters)."""
        return api(self.name, "list_nodes", lambda: driver.list_nodes())

    def find_by_id(self, driver: NodeDriver, node_id: str) -> Node | None:
        return next((n for n in self.nodes_with_id(driver, node_id)
                     if str(n.id) == str(node_id)), None)

    def find_by_name(self, driver: NodeDriver, name: str) -> list[Node]:
        """Live (not terminated) nodes named ``name``."""
        return [n for n in self.nodes_named(driver, name)
                if n.name == name and n.state not in GONE]

    def earlier_try(self, driver: NodeDriver, clipboard: dict[str, Any],
                    record: dict[str, Any]) -> Node | None:
        """The node an earlier, interrupted create made; labels are unique, so the one
        with the host's name (EC2 overrides: names are not unique there)."""
        hostname = clipboard["instance"]["hostname"]
        named = self.find_by_name(driver, hostname)
        return self.ours(named[0], hostname, "the") if named else None

    # ---- ownership -----------------------------------------------------------------------

    def tag_problem(self, node: Node, hostname: str) -> str | None:
        """Why the node's tags say jarvis did not create it for ``hostname`` (None: they
        do, or the provider has no tags)."""
        return None

    def owner_problem(self, node: Node, hostname: str) -> str | None:
        """Why ``node`` is not ``hostname``'s node at the provider, or None when it is."""
        if node.name != hostname:
            return f"it is named {str(node.name)[:64]!r}"
        return self.tag_problem(node, hostname)

    def ours(self, node: Node | None, hostname: str, what: str) -> Node | None:
        """``node`` when it is ``hostname``'s (or None); StepFailed naming why it is not."""
        if node is None:
            return None
        problem = self.owner_problem(node, hostname)
        if problem is not None:
            raise StepFailed(f"{what} {self.name} node {node.id} is not {hostname}'s: "
                             f"{problem}; not touched")
        return node

    def resolve(self, driver: NodeDriver, clipboard: dict[str, Any]) -> Node | None:
        """The node a destroy or poweroff acts on: by ``node.id``, else by the host's name;
        either way only a node that is this host's at the provider."""
        node_id = (clipboard.get("node") or {}).get("id")
        hostname = clipboard["instance"]["hostname"]
        if node_id:
            return self.ours(self.find_by_id(driver, str(node_id)), hostname, "the recorded")
        nodes = self.find_by_name(driver, hostname)
        for node in nodes:
            self.ours(node, hostname, "the")
        if len(nodes) > 1:
            ids = ", ".join(str(n.id) for n in nodes)
            raise StepFailed(f"{len(nodes)} live {self.name} nodes are named {hostname} "
                             f"({ids}); refusing to guess: remove the extra ones at the provider")
        return nodes[0] if nodes else None

    def record(self, record: dict[str, Any], node: Node) -> dict[str, Any]:
        """``record`` updated with what the provider says about ``node``."""
        ipv4, ipv6, private = addresses(node)
        out = dict(record)
        out.update({"provider": self.name, "id": str(node.id), "name": node.name,
                    "state": str(node.state)})
        out["ip"] = ipv4 or out.get("ip")
        out["ipv6"] = ipv6 or out.get("ipv6")
        out["private_ip"] = private or out.get("private_ip")
        return out
