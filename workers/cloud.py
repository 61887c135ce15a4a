"""Cloud nodes through apache-libcloud: EC2, Linode (API v4) and vSphere.

The design names the provider (``instance.provider``, case-insensitive; ``aws``
means ec2, ``vmware`` means vsphere) and, by name, the size (``instance.size``,
or ``instance.grade`` mapped per provider by the ``grades`` config), the image
(``instance.guestid``) and the location (``instance.datacenter``). Credentials
and endpoints come from ``providers.<provider>`` in the config, secrets inline or
from the environment variable the config names.

Every step is "ensure" style, because a pipeline may be retried after a crash:

* ``cloud:create`` reuses the node already recorded in ``node.id``; on EC2 it
  sends a client token derived from the deployment (hostname, deploy key and a
  generation bumped by ``destroy``) so AWS itself refuses to start a second
  instance for a retried request, and it also tags the instance with that token
  and looks for the tag first (moto, the test server, ignores client tokens).
  Linode and vSphere labels are unique, so there a node with the host's name is
  the one to reuse.
* ``cloud:destroy`` and ``cloud:poweroff`` treat "already gone" as done.

Whatever the clipboard says, a step acts only on a node that is this host's at
the provider (``owner_problem``): named after the host and, on EC2, tagged
``jarvis-host=<hostname>`` at create; on Linode tagged ``jarvis``. A ``node.id``
naming someone else's instance is refused, never adopted, powered off or
destroyed, and so is a node that merely shares the host's name.

Every libcloud call passes its arguments by keyword (Linode's ``create_node``
changed its argument order between releases) and runs with a timeout; waits are
bounded by ``providers.<provider>.wait_timeout``.

Addresses: ``node.ip`` / ``node.ipv6`` are what the cloud API reports (they go
into DNS); ``node.ssh_host`` / ``node.ssh_port`` are where jarvis connects, and
``providers.<provider>.ssh_host`` / ``ssh_port`` override them. The override
exists because a test cloud (moto) reports random addresses that belong to
nobody here (or to 127.x, which would hit this very machine): tests map the node
to their own sshd and must never connect to an address from the cloud API.
"""
from __future__ import annotations

import base64
import binascii
import copy
import difflib
import hashlib
import logging
import re
import time
import uuid
from typing import Any, Callable, Iterable, TypeVar

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from clipboard import config
from clipboard.errors import ConfigError, JarvisError, StepFailed
from clipboard.worker import task

log = logging.getLogger(__name__)

PROVIDERS = ("ec2", "linode", "vsphere")
ALIASES = {"aws": "ec2", "amazon": "ec2", "vmware": "vsphere"}
GONE = {NodeState.TERMINATED}
NEEDS_LOCATION = {"linode", "vsphere"}  # EC2 picks an availability zone itself
TOKEN_TAG = "jarvis-client-token"
HOST_TAG = "jarvis-host"
LINODE_TAG = "jarvis"
SUGGESTIONS = 6
ALIASED_FIELD = {"size": "size", "image": "guestid", "location": "datacenter"}
_KEY_LINE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|"
                       r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                       r"\s+([A-Za-z0-9+/]+={0,3})(?:\s.*)?$")

T = TypeVar("T")

# Credentials of the drivers built in this process: no error message may show them.
_SECRETS: set[str] = set()


# ---- provider, settings, driver -------------------------------------------------------------

def canonical(name: Any) -> str:
    """The provider's canonical name (``Linode`` → linode, ``aws`` → ec2), or StepFailed."""
    if not isinstance(name, str) or not name.strip():
        raise StepFailed("instance.provider is not set (one of: ec2, linode, vsphere)")
    lowered = name.strip().lower()
    lowered = ALIASES.get(lowered, lowered)
    if lowered not in PROVIDERS:
        raise StepFailed(f"provider {name!r} is not a cloud provider "
                         f"(known: {', '.join(PROVIDERS)}; aliases: aws, vmware)")
    return lowered


def provider_of(clipboard: dict[str, Any], forced: str | None = None,
                design_first: bool = False) -> str:
    """The provider a step acts on: the recorded node's (it exists there), else the design's.

    ``design_first`` is for create: a redeploy may move the host to another
    provider than its old node's. ``forced`` is the provider of a seed-style alias
    (``linode:deploy``); a design that names another provider is refused rather
    than deployed somewhere else.
    """
    node = clipboard.get("node") or {}
    design = (clipboard.get("instance") or {}).get("provider")
    named = node.get("provider") if node.get("id") and not design_first else None
    named = named or design
    if forced is None:
        return canonical(named)
    if named is not None and canonical(named) != forced:
        raise StepFailed(f"the design's provider is {named!r}, but this step is for {forced}")
    return forced


def settings(provider: str, cfg: config.Config | None = None) -> dict[str, Any]:
    cfg = cfg or config.current()
    return cfg.get(f"providers.{provider}") or {}


def make_driver(provider: str, cfg: config.Config | None = None) -> NodeDriver:
    """A libcloud driver for ``provider`` built from the config, arguments by keyword.

    A missing credential is a ConfigError naming the key and its environment variable.
    """
    cfg = cfg or config.current()
    s = settings(provider, cfg)
    timeout = float(s.get("api_timeout") or 60)
    if provider == "ec2":
        key = cfg.secret("providers.ec2.key")
        secret = cfg.secret("providers.ec2.secret")
        cls = get_driver(Provider.EC2)
        region = str(s.get("region") or "")
        if region not in cls.list_regions():
            raise ConfigError(f"providers.ec2.region {region!r} is not an EC2 region "
                              f"(for example: {', '.join(sorted(cls.list_regions())[:5])})")
        kwargs: dict[str, Any] = {"key": key, "secret": secret, "region": region,
                                  "secure": bool(s.get("secure", True)),
                                  "signature_version": str(s.get("signature_version") or "4"),
                                  "timeout": timeout}
        if s.get("host"):
            kwargs["host"] = str(s["host"])
        if s.get("port"):
            kwargs["port"] = int(s["port"])
        _SECRETS.add(secret)
        return _guard(provider, [secret], lambda: cls(**kwargs))
    if provider == "linode":
        token = cfg.secret("providers.linode.token")
        _SECRETS.add(token)
        cls = get_driver(Provider.LINODE)
        return _guard(provider, [token], lambda: cls(key=token, api_version="4.0", timeout=timeout))
    if provider == "vsphere":
        from libcloud.compute.drivers.vsphere import VSphere_REST_NodeDriver
        host = s.get("host")
        if not host:
            raise ConfigError("providers.vsphere.host is not set (the vCenter host name)")
        user = s.get("user")
        if not user:
            raise ConfigError("providers.vsphere.user is not set")
        password = cfg.secret("providers.vsphere.password")
        _SECRETS.add(password)
        return _guard(provider, [password], lambda: VSphere_REST_NodeDriver(
            key=str(user), secret=password, host=str(host), port=int(s.get("port") or 443),
            ca_cert=s.get("ca_cert") or None))
    raise StepFailed(f"no driver for provider {provider!r}")


def _guard(what: str, secrets: Iterable[str], call: Callable[[], T]) -> T:
    """Run one libcloud call; any failure becomes a one-line StepFailed without secrets."""
    try:
        return call()
    except JarvisError:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split()) or "no message"
        for secret in sorted({*secrets, *_SECRETS}, key=len, reverse=True):
            if secret:
                message = message.replace(secret, "***")
        code = getattr(exc, "code", None)
        detail = f"{type(exc).__name__}{f' {code}' if code else ''}: {message[:300]}"
        raise StepFailed(f"{what}: {detail}") from None


def _api(provider: str, what: str, call: Callable[[], T]) -> T:
    return _guard(f"{provider} {what}", [], call)


# ---- choosing size, image and location by name ----------------------------------------------

def _entries(mapping: Any) -> dict[str, Any]:
    """A free-form config mapping without its ``"*"`` template entry."""
    return {str(k): v for k, v in (mapping or {}).items() if k != "*"}


def alias(s: dict[str, Any], kind: str, wanted: str, provider: str) -> tuple[str, bool]:
    """The provider's name for the design's ``wanted`` size, image or location, and whether
    an alias changed it (``providers.<provider>.aliases.<kind>``, case-insensitive).

    A size or image alias gives the host something other than what its design names
    (the seed's ``Debian 6`` becomes a current Debian), so it is a warning, which the
    step's log keeps; a location alias only translates a place's name.
    """
    table = _entries((s.get("aliases") or {}).get(kind))
    lowered = {k.lower(): str(v) for k, v in table.items() if v}
    mapped = lowered.get(wanted.strip().lower())
    if mapped is None or mapped == wanted:
        return wanted, False
    where = f"providers.{provider}.aliases.{kind}"
    if kind == "location":
        log.info("instance.datacenter %r is %s at %s (%s)", wanted, mapped, provider, where)
    else:
        log.warning("instance.%s %r is deployed as %s %r at %s (%s), not as the design names it",
                    ALIASED_FIELD[kind], wanted, kind, mapped, provider, where)
    return mapped, True


def _unknown(kind: str, wanted: str, provider: str, names: list[str], hint: str = "") -> StepFailed:
    names = sorted(set(names))
    if len(names) <= SUGGESTIONS:
        shown = names
    else:
        shown = difflib.get_close_matches(wanted, names, n=SUGGESTIONS, cutoff=0.3) \
            or names[:SUGGESTIONS]
    listed = f"; valid {kind}s include: {', '.join(shown)} ({len(names)} in all)" if names else ""
    return StepFailed(f"unknown {kind} {wanted!r} for {provider}{listed}{hint}")


def _by_name(items: Iterable[T], wanted: str, keys: Callable[[T], Iterable[Any]]) -> T | None:
    lowered = wanted.strip().lower()
    items = list(items)
    for item in items:
        if any(str(k).lower() == lowered for k in keys(item) if k):
            return item
    for item in items:  # "Atlanta" for "Atlanta, GA, USA"
        if any(str(k).split(",")[0].strip().lower() == lowered for k in keys(item) if k):
            return item
    return None


def wanted_size(instance: dict[str, Any], provider: str, cfg: config.Config) -> str:
    """The size name: ``instance.size`` if given, else the grade's size for this provider."""
    size = instance.get("size")
    if size not in (None, ""):
        return str(size)
    grade = instance.get("grade")
    grades = _entries(cfg.get("grades"))
    if grade in (None, ""):
        raise StepFailed("the design has neither size nor grade "
                         f"(grades: {', '.join(sorted(grades)) or 'none configured'})")
    entry = grades.get(str(grade).lower())
    if not isinstance(entry, dict):
        raise StepFailed(f"unknown grade {grade!r} (configured: {', '.join(sorted(grades))})")
    size = entry.get(provider)
    if not size:
        raise StepFailed(f"grade {grade!r} has no size for {provider} "
                         f"(set grades.{str(grade).lower()}.{provider})")
    return str(size)


def choose_size(driver: NodeDriver, provider: str, wanted: str, s: dict[str, Any]) -> NodeSize:
    wanted, _ = alias(s, "size", wanted, provider)
    if provider == "vsphere":  # vSphere has no size catalogue: the config's flavors are it
        flavors = _entries(s.get("flavors"))
        flavor = flavors.get(wanted)
        if not isinstance(flavor, dict):
            raise _unknown("size", wanted, provider, [str(k) for k in flavors],
                           " (define it under providers.vsphere.flavors)")
        return NodeSize(id=wanted, name=wanted, ram=int(flavor.get("ram") or 1024),
                        disk=int(flavor.get("disk") or 0), bandwidth=None, price=None,
                        driver=driver, extra={"cpu": int(flavor.get("cpus") or 1)})
    sizes = _api(provider, "list_sizes", lambda: driver.list_sizes())
    found = _by_name(sizes, wanted, lambda z: (z.id, z.name))
    if found is None:
        raise _unknown("size", wanted, provider, [str(z.id) for z in sizes])
    return found


def choose_image(driver: NodeDriver, provider: str, wanted: str, s: dict[str, Any]) -> NodeImage:
    """The image by id or name. On EC2 a name is looked up among the AMIs of
    ``image_owner``, or, for an alias written ``<owner>:<name>`` (AMI names hold no
    colon), of that owner; ``*`` in a name matches anything and the newest AMI wins."""
    wanted, aliased = alias(s, "image", wanted, provider)
    owner = str(s.get("image_owner") or "amazon")
    if aliased and provider == "ec2" and ":" in wanted:
        owner, wanted = wanted.split(":", 1)
    if provider != "ec2":
        images = _api(provider, "list_images", lambda: driver.list_images())
        found = _by_name(images, wanted, lambda i: (i.id, i.name))
        if found is None:
            raise _unknown("image", wanted, provider, [str(i.name) for i in images])
        return found
    if wanted.startswith("ami-"):
        images = _api(provider, "list_images", lambda: driver.list_images(ex_image_ids=[wanted]))
        if not images:
            raise StepFailed(f"unknown image {wanted!r} for ec2 (no such AMI in this region)")
        return images[0]
    # A name is only trusted from the configured owner: anyone can publish an AMI named alike.
    images = _api(provider, "list_images", lambda: driver.list_images(
        ex_owner=owner, ex_filters={"name": wanted}))
    if images:
        return max(images, key=lambda i: str(i.extra.get("creation_date") or ""))
    words = re.findall(r"[A-Za-z0-9]+", wanted) or [wanted]
    pattern = f"*{max(words, key=len).lower()}*"
    similar = _api(provider, "list_images", lambda: driver.list_images(
        ex_owner=owner, ex_filters={"name": pattern}))
    raise _unknown("image", wanted, provider, [str(i.name) for i in similar],
                   f" (AMI names owned by {owner}; an ami- id is accepted too)")


def choose_location(driver: NodeDriver, provider: str, wanted: str | None,
                    s: dict[str, Any]) -> NodeLocation | None:
    if wanted in (None, ""):
        if provider in NEEDS_LOCATION:
            locations = _api(provider, "list_locations", lambda: driver.list_locations())
            raise _unknown("location", "", provider, [str(loc.id) for loc in locations],
                           " (set instance.datacenter)")
        return None
    wanted, _ = alias(s, "location", str(wanted), provider)
    locations = _api(provider, "list_locations", lambda: driver.list_locations())
    found = _by_name(locations, wanted, lambda loc: (
        loc.id, loc.name, getattr(getattr(loc, "availability_zone", None), "name", None)))
    if found is None:
        raise _unknown("location", wanted, provider, [str(loc.name) for loc in locations])
    return found


# ---- keys ----------------------------------------------------------------------------------

def public_keys(clipboard: dict[str, Any]) -> list[str]:
    """Keys to authorise for root: jarvis's deploy key first, then the operator's key.

    The seed's ``ssh-dss`` key (and anything that is not an OpenSSH public key
    line) is skipped with a log line: OpenSSH 9 refuses DSA, and a cloud API
    would reject it and fail the whole create.
    """
    keys = []
    deploy = str((clipboard.get("deploy_key") or {}).get("public_key") or "").strip()
    if deploy:
        keys.append(deploy)
    operator = str((clipboard.get("instance") or {}).get("sshpubkey") or "").strip()
    if operator.startswith("ssh-dss"):
        log.warning("instance.sshpubkey is a DSA key (ssh-dss), which OpenSSH 9 refuses; "
                    "not authorised on the node")
    elif operator and not _KEY_LINE.match(operator):
        log.warning("instance.sshpubkey is not an OpenSSH public key line; not authorised")
    elif operator and operator not in keys:
        keys.append(operator)
    return keys


def key_fingerprint(public_key: str) -> str:
    """SHA-256 (hex) of the key's blob: names the EC2 key pair after its material."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, binascii.Error):
        blob = public_key.encode()
    return hashlib.sha256(blob).hexdigest()


def ensure_key_pair(driver: NodeDriver, public_key: str) -> str:
    """Import ``public_key`` as an EC2 key pair once; its name comes from its fingerprint."""
    name = f"jarvis-{key_fingerprint(public_key)[:20]}"
    existing = _api("ec2", "list_key_pairs", lambda: driver.list_key_pairs())
    if any(kp.name == name for kp in existing):
        log.info("EC2 key pair %s already imported", name)
        return name
    _api("ec2", "import_key_pair_from_string",
         lambda: driver.import_key_pair_from_string(name=name, key_material=public_key))
    log.info("EC2 key pair %s imported", name)
    return name


def cloud_config(keys: list[str]) -> str:
    """cloud-init user data authorising the keys for root (EC2 takes one key pair only)."""
    lines = ["#cloud-config", "disable_root: false", "ssh_authorized_keys:"]
    lines += [f"  - {key}" for key in keys]
    return "\n".join(lines) + "\n"


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


# ---- finding nodes ---------------------------------------------------------------------------

def find_by_id(driver: NodeDriver, provider: str, node_id: str) -> Node | None:
    if provider == "ec2":
        nodes = _api(provider, "list_nodes",
                     lambda: driver.list_nodes(ex_filters={"instance-id": node_id}))
    else:
        nodes = _api(provider, "list_nodes", lambda: driver.list_nodes())
    return next((n for n in nodes if str(n.id) == str(node_id)), None)


def owner_problem(node: Node, provider: str, hostname: str) -> str | None:
    """Why ``node`` is not ``hostname``'s node at the provider, or None when it is."""
    if node.name != hostname:
        return f"it is named {str(node.name)[:64]!r}"
    if provider == "ec2":
        tags = (node.extra or {}).get("tags") or {}
        if tags.get(HOST_TAG) != hostname:
            return f"it has no {HOST_TAG}={hostname} tag (jarvis did not create it for {hostname})"
    elif provider == "linode":
        if LINODE_TAG not in ((node.extra or {}).get("tags") or []):
            return f"it has no {LINODE_TAG} tag (jarvis did not create it)"
    return None


def _ours(node: Node | None, provider: str, hostname: str, what: str) -> Node | None:
    """``node`` when it is ``hostname``'s (or None); StepFailed naming why it is not."""
    if node is None:
        return None
    problem = owner_problem(node, provider, hostname)
    if problem is not None:
        raise StepFailed(f"{what} {provider} node {node.id} is not {hostname}'s: {problem}; "
                         "not touched")
    return node


def find_by_name(driver: NodeDriver, provider: str, name: str) -> list[Node]:
    """Live (not terminated) nodes named ``name``."""
    if provider == "ec2":
        nodes = _api(provider, "list_nodes",
                     lambda: driver.list_nodes(ex_filters={"tag:Name": name}))
    else:
        nodes = _api(provider, "list_nodes", lambda: driver.list_nodes())
    return [n for n in nodes if n.name == name and n.state not in GONE]


def find_by_token(driver: NodeDriver, token: str) -> Node | None:
    nodes = _api("ec2", "list_nodes",
                 lambda: driver.list_nodes(ex_filters={f"tag:{TOKEN_TAG}": token}))
    return next((n for n in nodes if n.state not in GONE), None)


def _addresses(node: Node) -> tuple[str | None, str | None, str | None]:
    public = [str(ip) for ip in node.public_ips or [] if ip]
    private = [str(ip) for ip in node.private_ips or [] if ip]
    ipv4 = next((ip for ip in public if ":" not in ip), None)
    ipv6 = next((ip for ip in public if ":" in ip), None)
    extra_v6 = str((node.extra or {}).get("ipv6") or "")  # Linode: "2600:3c00::1/128"
    if ipv6 is None and ":" in extra_v6:
        ipv6 = extra_v6.split("/")[0]
    return ipv4, ipv6, next((ip for ip in private if ":" not in ip), None)


def _record(record: dict[str, Any], provider: str, node: Node) -> dict[str, Any]:
    """``record`` updated with what the provider says about ``node``."""
    ipv4, ipv6, private = _addresses(node)
    out = dict(record)
    out.update({"provider": provider, "id": str(node.id), "name": node.name,
                "state": str(node.state)})
    out["ip"] = ipv4 or out.get("ip")
    out["ipv6"] = ipv6 or out.get("ipv6")
    out["private_ip"] = private or out.get("private_ip")
    return out


def _resolve(driver: NodeDriver, provider: str, clipboard: dict[str, Any]) -> Node | None:
    """The node a destroy or poweroff acts on: by ``node.id``, else by the host's name;
    either way only a node that is this host's at the provider."""
    node_id = (clipboard.get("node") or {}).get("id")
    hostname = clipboard["instance"]["hostname"]
    if node_id:
        return _ours(find_by_id(driver, provider, str(node_id)), provider, hostname,
                     "the recorded")
    nodes = find_by_name(driver, provider, hostname)
    for node in nodes:
        _ours(node, provider, hostname, "the")
    if len(nodes) > 1:
        ids = ", ".join(str(n.id) for n in nodes)
        raise StepFailed(f"{len(nodes)} live {provider} nodes are named {hostname} ({ids}); "
                         "refusing to guess: remove the extra ones at the provider")
    return nodes[0] if nodes else None


# ---- the steps -------------------------------------------------------------------------------

def ensure_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any]:
    """Ensure the design's node exists at its provider; record it in ``node``."""
    clipboard = copy.deepcopy(clipboard)
    provider = provider_of(clipboard, forced, design_first=True)
    cfg = config.current()
    s = settings(provider, cfg)
    instance = clipboard["instance"]
    hostname = instance["hostname"]
    record = dict(clipboard.get("node") or {})
    driver = make_driver(provider, cfg)

    if record.get("id") and record.get("provider") == provider:
        node = _ours(find_by_id(driver, provider, str(record["id"])), provider, hostname,
                     "the recorded")
        if node is not None and node.state not in GONE:
            log.info("%s node %s (%s) already exists; kept", provider, node.id, node.name)
            clipboard["node"] = _record(record, provider, node)
            return clipboard
    if provider == "ec2":
        record["client_token"] = client_token(clipboard)
        existing = _ours(find_by_token(driver, record["client_token"]), provider, hostname, "the")
    else:
        named = find_by_name(driver, provider, hostname)
        existing = _ours(named[0], provider, hostname, "the") if named else None
    if existing is not None:
        log.info("%s node %s (%s) was created by an earlier try; kept",
                 provider, existing.id, existing.name)
        clipboard["node"] = _record(record, provider, existing)
        return clipboard

    # A fresh node: nothing of an old one's (other provider, or terminated) may linger.
    record = {k: record[k] for k in ("generation", "client_token") if k in record}
    size = choose_size(driver, provider, wanted_size(instance, provider, cfg), s)
    image_name = instance.get("guestid")
    if image_name in (None, ""):
        raise StepFailed("instance.guestid (the image name) is not set")
    image = choose_image(driver, provider, str(image_name), s)
    location = choose_location(driver, provider, instance.get("datacenter"), s)
    keys = public_keys(clipboard)
    record.update({"provider": provider, "name": hostname, "state": "creating",
                   "size": str(size.id), "image": str(image.id),
                   "location": location.name if location is not None else None})
    clipboard["node"] = record
    try:
        node = _create_node(driver, provider, clipboard, s, size, image, location, keys)
    except StepFailed as exc:
        raise StepFailed(str(exc), clipboard=clipboard) from None
    clipboard["node"] = _record(record, provider, node)
    log.info("%s node %s (%s) created: size %s, image %s, location %s", provider, node.id,
             node.name, size.id, image.name, record["location"] or "default")
    if node.state in GONE:
        raise StepFailed(f"{provider} answered with the terminated node {node.id} "
                         "(a reused client token?): run cloud:destroy, then create again",
                         clipboard=clipboard)
    return clipboard


def _create_node(driver: NodeDriver, provider: str, clipboard: dict[str, Any], s: dict[str, Any],
                 size: NodeSize, image: NodeImage, location: NodeLocation | None,
                 keys: list[str]) -> Node:
    hostname = clipboard["instance"]["hostname"]
    if provider == "ec2":
        token = clipboard["node"]["client_token"]
        kwargs: dict[str, Any] = {
            "name": hostname, "size": size, "image": image, "location": location,
            "ex_metadata": {TOKEN_TAG: token, HOST_TAG: hostname, "jarvis-fqdn": str(
                clipboard["instance"].get("fqdn") or hostname)},
            "ex_clienttoken": token}
        if keys:
            kwargs["ex_keyname"] = ensure_key_pair(driver, keys[0])
            kwargs["ex_userdata"] = cloud_config(keys)
        if s.get("security_groups"):
            kwargs["ex_security_groups"] = list(s["security_groups"])
        return _api(provider, "create_node", lambda: driver.create_node(**kwargs))
    if provider == "linode":
        password = clipboard["instance"].get("root_password")
        if not password:
            raise StepFailed("instance.root_password is not set (run core:randpass first): "
                             "Linode requires one with an image")
        return _guard(f"{provider} create_node", [str(password)], lambda: driver.create_node(
            location=location, name=hostname, size=size, image=image, root_pass=str(password),
            ex_authorized_keys=keys, ex_tags=[LINODE_TAG]))
    if keys:
        log.info("vSphere cannot inject SSH keys: the template %s must authorise them "
                 "(for example through cloud-init guestinfo)", image.name)
    extra = {f"ex_{k}": s[k] for k in ("folder", "datastore", "network") if s.get(k)}
    return _api(provider, "create_node", lambda: driver.create_node(
        name=hostname, image=image, size=size, location=location, **extra))


def wait_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any]:
    """Wait (bounded) until the node runs with a public IPv4; record its addresses."""
    clipboard = copy.deepcopy(clipboard)
    record = dict(clipboard.get("node") or {})
    if not record.get("id"):
        raise StepFailed("no node.id in the clipboard: cloud:create has not run")
    provider = provider_of(clipboard, forced)
    s = settings(provider)
    driver = make_driver(provider)
    timeout = float(s.get("wait_timeout") or 600)
    interval = max(0.05, float(s.get("poll_interval") or 5))
    deadline = time.monotonic() + timeout
    hostname = clipboard["instance"]["hostname"]
    while True:
        node = _ours(find_by_id(driver, provider, str(record["id"])), provider, hostname,
                     "the recorded")
        if node is None or node.state in GONE:
            record["state"] = "terminated" if node is not None else "missing"
            clipboard["node"] = record
            raise StepFailed(f"{provider} node {record['id']} is {record['state']}",
                             clipboard=clipboard)
        record = _record(record, provider, node)
        if node.state == NodeState.RUNNING and record.get("ip"):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            clipboard["node"] = record
            raise StepFailed(f"{provider} node {node.id} is {node.state}, not running with a "
                             f"public IP, after {timeout:g}s", clipboard=clipboard)
        time.sleep(min(interval, left))
    record["ssh_host"] = str(s.get("ssh_host") or record["ip"])
    record["ssh_port"] = int(s.get("ssh_port") or 22)
    clipboard["node"] = record
    log.info("%s node %s running at %s (ssh %s:%s)", provider, node.id, record["ip"],
             record["ssh_host"], record["ssh_port"])
    return clipboard


def poweroff_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any] | None:
    """Stop the node (by ``node.id``, else by the host's name); none or stopped = done."""
    clipboard = copy.deepcopy(clipboard)
    provider = provider_of(clipboard, forced)
    driver = make_driver(provider)
    node = _resolve(driver, provider, clipboard)
    if node is None or node.state in GONE:
        log.info("no live %s node for %s: nothing to power off", provider,
                 clipboard["instance"]["hostname"])
        return None
    if node.state == NodeState.STOPPED:
        log.info("%s node %s is already stopped", provider, node.id)
    else:
        _api(provider, "stop_node", lambda: driver.stop_node(node=node))
        log.info("%s node %s powered off", provider, node.id)
    after = find_by_id(driver, provider, str(node.id)) or node
    clipboard["node"] = _record(dict(clipboard.get("node") or {}), provider, after)
    return clipboard


def destroy_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any] | None:
    """Destroy the node (by ``node.id``, else by the host's name for a redeploy); gone = done."""
    clipboard = copy.deepcopy(clipboard)
    provider = provider_of(clipboard, forced)
    driver = make_driver(provider)
    node = _resolve(driver, provider, clipboard)
    record = dict(clipboard.get("node") or {})
    if node is None or node.state in GONE:
        log.info("no live %s node for %s: nothing to destroy", provider,
                 clipboard["instance"]["hostname"])
        if not record.get("id"):
            return None
        record["state"] = "terminated"
    else:
        _api(provider, "destroy_node", lambda: driver.destroy_node(node=node))
        log.info("%s node %s (%s) destroyed", provider, node.id, node.name)
        record = _record(record, provider, node)
        record["state"] = "terminated"
    record.pop("client_token", None)  # that token belongs to the node just destroyed
    record["generation"] = int(record.get("generation") or 0) + 1
    record.pop("ssh_host", None)
    record.pop("ssh_port", None)
    clipboard["node"] = record
    return clipboard


def deploy(clipboard: dict[str, Any], provider: str) -> dict[str, Any]:
    """create + wait_running for one provider (the seed's ``linode:deploy`` and friends)."""
    return wait_node(ensure_node(clipboard, provider), provider)


def seed_style_tasks(alias: str, provider: str) -> None:
    """Register ``<alias>:deploy``, ``<alias>:poweroff`` and ``<alias>:destroy`` with the
    provider fixed, for pipelines written per provider in the seed's style
    (``linode:deploy``); a design naming another provider is refused, not moved."""
    def deploy_task(clipboard: dict[str, Any]) -> dict[str, Any]:
        return deploy(clipboard, provider)

    def poweroff_task(clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return poweroff_node(clipboard, provider)

    def destroy_task(clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return destroy_node(clipboard, provider)

    for func, name, doc, options in (
            (deploy_task, "deploy", f"Create the {provider} node and wait until it runs "
                                    "(cloud:create + cloud:wait_running).",
             {"undo": f"{alias}:destroy", "timeout": 900, "writes": ("node",)}),
            (poweroff_task, "poweroff", f"Power the {provider} node off (already off or gone = "
                                        "done).", {"timeout": 600, "writes": ("node",)}),
            (destroy_task, "destroy", f"Destroy the {provider} node by node.id, or by hostname "
                                      "for a redeploy (gone = done).",
             {"timeout": 600, "writes": ("node",)})):
        func.__module__, func.__name__, func.__qualname__, func.__doc__ = (
            f"workers.{alias}", name, name, doc)
        task(**options)(func)


# ---- the tasks -------------------------------------------------------------------------------
# Step timeouts sit above the internal bounds (API timeouts, wait_timeout) so a step
# fails with its own clear reason before the runner has to kill it.

@task(undo="cloud:destroy", timeout=600, writes=("node",))
def create(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Create the design's node at its provider (size, image, location by name); idempotent."""
    return ensure_node(clipboard)


@task(timeout=900, writes=("node",))
def wait_running(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Wait until the node runs; record node.ip, ipv6, ssh_host and ssh_port."""
    return wait_node(clipboard)


@task(timeout=600, writes=("node",))
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Power the node off (already off or gone = done)."""
    return poweroff_node(clipboard)


@task(timeout=600, writes=("node",))
def destroy(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Destroy the node by node.id, or by hostname for a redeploy (already gone = done)."""
    return destroy_node(clipboard)
