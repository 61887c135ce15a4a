"""The cloud provider silo against moto's EC2 server, with libcloud's real EC2 driver.

Each step runs as the runner runs it (a fresh worker process, clipboard on stdin,
config through JARVIS_CONFIG); what the steps did is then checked independently
by asking the server through a driver of the test's own. Linode and vSphere
have no server here: their tests cover what needs no network (driver
construction, credentials).
"""
from __future__ import annotations

import copy
import io
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from libcloud.compute.drivers.linode import LinodeNodeDriverV4
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from clipboard import config, worker
from clipboard.errors import ConfigError, StepFailed
from tests.servers.moto_ec2 import MotoEC2
from tests.silos import output, run_worker
from workers import _catalog, _cloud_ec2, _libcloud, _node_keys, _provider, cloud, core

IMAGE = "ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-20170727"  # one of moto's AMIs
DSA_KEY = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1A user@host"
NO_AWS_ENV = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


def ec2_config(moto: MotoEC2, **overrides: Any) -> dict[str, Any]:
    ec2 = {**moto.config(), "poll_interval": 0.1, "wait_timeout": 5, **overrides}
    return {"providers": {"ec2": ec2}, "grades": {"small": {"ec2": "t3.nano"}}}


def design(**instance: Any) -> dict[str, Any]:
    base = {"hostname": "loki", "fqdn": "loki.example.com", "provider": "EC2",
            "size": "t3.micro", "guestid": IMAGE, "datacenter": "us-east-1b",
            "sshpubkey": DSA_KEY}
    base.update(instance)
    clip = {"instance": {k: v for k, v in base.items() if v is not None}}
    return core.keypair(clip)


def driver(moto: MotoEC2) -> Any:
    c = moto.config()
    return get_driver(Provider.EC2)(key=c["key"], secret=c["secret"], region=c["region"],
                                    host=c["host"], port=c["port"], secure=False,
                                    signature_version="4", timeout=10)


def live_nodes(moto: MotoEC2) -> list[Any]:
    return [n for n in driver(moto).list_nodes() if n.state != NodeState.TERMINATED]


def step(name: str, clip: dict[str, Any], cfg: dict[str, Any], tmp_path: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a step in a fresh worker process, exactly as the runner does."""
    return run_worker(name, clip, cfg, tmp_path, env={**NO_AWS_ENV, **(env or {})})


def call(name: str, clip: dict[str, Any], cfg: dict[str, Any], tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess[str]:
    """Run a step through the same contract code in this process (no fork: faster).

    libcloud's import alone costs a new process most of a second; the tests that
    need a real process boundary (environment variables, the alias modules) use ``step``.
    """
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv(config.ENV_VAR, str(path))
    config.current.cache_clear()
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        worker.configure_logging(stderr)
        status = worker.run_task(name, io.StringIO(yaml.safe_dump(clip)), stdout, stderr)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        config.current.cache_clear()
    return subprocess.CompletedProcess([name], status, stdout.getvalue(), stderr.getvalue())


def test_create_records_the_node_with_its_name_tag_ip_and_key(moto_ec2: MotoEC2,
                                                              tmp_path: Path) -> None:
    clip = design()
    result = step("cloud:create", clip, ec2_config(moto_ec2), tmp_path)
    node = output(result)["node"]
    assert node["provider"] == "ec2" and node["name"] == "loki"
    assert node["id"].startswith("i-") and node["client_token"]
    [live] = live_nodes(moto_ec2)
    assert live.id == node["id"]
    assert live.extra["tags"]["Name"] == "loki"
    assert live.extra["tags"][_cloud_ec2.TOKEN_TAG] == node["client_token"]
    assert live.extra["instance_type"] == "t3.micro"
    assert live.extra["availability"] == "us-east-1b"
    assert node["ip"] == live.public_ips[0]
    fingerprint = _node_keys.key_fingerprint(clip["deploy_key"]["public_key"])
    expected_pair = "jarvis-" + fingerprint[:20]
    assert live.extra["key_name"] == expected_pair
    assert "DSA" in result.stderr  # the seed's ssh-dss key is skipped, not a crash


def test_retried_create_makes_one_node(moto_ec2: MotoEC2, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clip = design()
    cfg = ec2_config(moto_ec2)
    first = output(call("cloud:create", clip, cfg, tmp_path, monkeypatch))["node"]
    # A retry from the original clipboard: the first run's output was lost.
    again = output(call("cloud:create", clip, cfg, tmp_path, monkeypatch))["node"]
    # A rerun on the first run's output.
    rerun = output(call("cloud:create", {**clip, "node": first}, cfg, tmp_path,
                        monkeypatch))["node"]
    assert first["id"] == again["id"] == rerun["id"]
    assert len(live_nodes(moto_ec2)) == 1
    assert len(driver(moto_ec2).list_key_pairs()) == 1


def test_grade_is_mapped_to_the_providers_size(moto_ec2: MotoEC2, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clip = design(size=None, grade="Small", datacenter=None)
    output(call("cloud:create", clip, ec2_config(moto_ec2), tmp_path, monkeypatch))
    [live] = live_nodes(moto_ec2)
    assert live.extra["instance_type"] == "t3.nano"


def test_wait_running_records_addresses_and_the_ssh_override(moto_ec2: MotoEC2,
                                                             tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2, ssh_host="127.0.0.9", ssh_port=2222)
    created = output(call("cloud:create", design(), cfg, tmp_path, monkeypatch))
    node = output(call("cloud:wait_running", created, cfg, tmp_path, monkeypatch))["node"]
    [live] = live_nodes(moto_ec2)
    assert node["state"] == "running"
    assert node["ip"] == live.public_ips[0] and node["ipv6"] is None
    assert (node["ssh_host"], node["ssh_port"]) == ("127.0.0.9", 2222)


def test_ec2_deploy_alias_creates_and_waits(moto_ec2: MotoEC2, tmp_path: Path) -> None:
    node = output(step("ec2:deploy", design(provider="aws"), ec2_config(moto_ec2),
                       tmp_path))["node"]
    assert node["state"] == "running" and node["ssh_host"] == node["ip"]
    refused = step("ec2:deploy", design(provider="Linode"), ec2_config(moto_ec2), tmp_path)
    assert refused.returncode == 1 and "this step is for ec2" in refused.stderr
    assert len(live_nodes(moto_ec2)) == 1


def test_poweroff_stops_and_a_bounded_wait_keeps_the_node(moto_ec2: MotoEC2,
                                                          tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2, wait_timeout=0.5)
    created = output(call("cloud:create", design(), cfg, tmp_path, monkeypatch))
    stopped = output(call("cloud:poweroff", created, cfg, tmp_path, monkeypatch))
    assert stopped["node"]["state"] == "stopped"
    assert driver(moto_ec2).list_nodes()[0].state == NodeState.STOPPED
    again = call("cloud:poweroff", stopped, cfg, tmp_path, monkeypatch)
    assert again.returncode == 0 and "already stopped" in again.stderr
    waited = call("cloud:wait_running", stopped, cfg, tmp_path, monkeypatch)
    assert waited.returncode == 1 and "after 0.5s" in waited.stderr
    # The failing step still hands back the clipboard with the node in it.
    assert yaml_node(waited)["id"] == created["node"]["id"]


def yaml_node(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return yaml.safe_load(result.stdout)["node"]


def test_destroy_by_id_is_idempotent(moto_ec2: MotoEC2, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2)
    created = output(call("cloud:create", design(), cfg, tmp_path, monkeypatch))
    destroyed = output(call("cloud:destroy", created, cfg, tmp_path, monkeypatch))
    assert destroyed["node"]["state"] == "terminated"
    assert "client_token" not in destroyed["node"] and destroyed["node"]["generation"] == 1
    [gone] = driver(moto_ec2).list_nodes()
    assert gone.id == created["node"]["id"] and gone.state == NodeState.TERMINATED
    again = call("cloud:destroy", destroyed, cfg, tmp_path, monkeypatch)
    assert again.returncode == 0 and "nothing to destroy" in again.stderr
    # After a destroy the same deployment gets a new node, not the terminated one back.
    recreated = output(call("cloud:create", destroyed, cfg, tmp_path, monkeypatch))["node"]
    assert recreated["id"] != created["node"]["id"] and recreated["state"] != "terminated"


def test_destroy_by_name_for_a_redeploy(moto_ec2: MotoEC2, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2)
    old = output(call("cloud:create", design(), cfg, tmp_path, monkeypatch))["node"]
    fresh = design()  # a redeploy starts from the design: no node id in it
    result = output(call("cloud:destroy", fresh, cfg, tmp_path, monkeypatch))
    assert result["node"]["id"] == old["id"] and result["node"]["state"] == "terminated"
    assert live_nodes(moto_ec2) == []
    nothing = call("cloud:destroy", fresh, cfg, tmp_path, monkeypatch)
    assert nothing.returncode == 0 and nothing.stdout == ""


def test_missing_credential_names_the_environment_variable(moto_ec2: MotoEC2,
                                                           tmp_path: Path) -> None:
    cfg = ec2_config(moto_ec2, secret=None, secret_env="JARVIS_TEST_EC2_SECRET")
    result = step("cloud:create", design(), cfg, tmp_path)
    assert result.returncode == 1
    assert "providers.ec2.secret" in result.stderr and "JARVIS_TEST_EC2_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    ok = step("cloud:create", design(), cfg, tmp_path,
              env={"JARVIS_TEST_EC2_SECRET": "from-the-environment"})
    assert ok.returncode == 0, ok.stderr
    default = ec2_config(moto_ec2, key=None)
    assert "AWS_ACCESS_KEY_ID" in step("cloud:create", design(), default, tmp_path).stderr


def test_unknown_size_image_and_location_list_valid_names(moto_ec2: MotoEC2,
                                                          tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2)
    size = call("cloud:create", design(size="t3.mikro"), cfg, tmp_path, monkeypatch)
    assert size.returncode == 1 and "unknown size 't3.mikro' for ec2" in size.stderr
    assert "t3.micro" in size.stderr and "Traceback" not in size.stderr
    image = call("cloud:create", design(guestid="ubuntu-trusty-14.04"), cfg, tmp_path, monkeypatch)
    assert "unknown image 'ubuntu-trusty-14.04'" in image.stderr and IMAGE in image.stderr
    place = call("cloud:create", design(datacenter="Atlanta"), cfg, tmp_path, monkeypatch)
    assert "unknown location 'Atlanta'" in place.stderr and "us-east-1a" in place.stderr
    assert driver(moto_ec2).list_nodes() == []


def test_config_aliases_let_the_seed_names_deploy(moto_ec2: MotoEC2, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ec2_config(moto_ec2, aliases={"size": {"512": "t3.small"}, "image": {"Debian 6": IMAGE},
                                        "location": {"Atlanta": "us-east-1c"}})
    seed = design(size=512, guestid="Debian 6", datacenter="Atlanta")
    output(call("cloud:create", seed, cfg, tmp_path, monkeypatch))
    [live] = live_nodes(moto_ec2)
    assert (live.extra["instance_type"], live.extra["availability"]) == ("t3.small", "us-east-1c")


def test_the_moto_shim_gives_libcloud_what_aws_gives(moto_ec2: MotoEC2, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture's own check: 0-based tag indexes and reboot answers (for other silos)."""
    created = output(call("cloud:create", design(), ec2_config(moto_ec2), tmp_path, monkeypatch))
    ec2 = driver(moto_ec2)
    [node] = ec2.list_nodes()
    assert ec2.ex_create_tags(resource=node, tags={"role": "web"})  # sends ResourceId.0, Tag.0
    assert ec2.ex_describe_tags(resource=node)["role"] == "web"
    assert ec2.reboot_node(node=node) is True
    assert node.id == created["node"]["id"]


# ---- without a server: driver construction and credentials ----------------------------------

@pytest.fixture
def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def load(data: dict[str, Any]) -> config.Config:
        path = tmp_path / "jarvis.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv(config.ENV_VAR, str(path))
        config.current.cache_clear()
        return config.current()
    yield load
    config.current.cache_clear()


def test_linode_driver_uses_api_v4_and_names_its_token_variable(
        use_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINODE_TOKEN", raising=False)
    cfg = use_config({})
    with pytest.raises(ConfigError, match="LINODE_TOKEN"):
        cloud.PROVIDERS["linode"].make_driver(cfg)
    monkeypatch.setenv("LINODE_TOKEN", "t0ken-from-env")
    built = cloud.PROVIDERS["linode"].make_driver(cfg)
    assert isinstance(built, LinodeNodeDriverV4) and built.key == "t0ken-from-env"

    def leaky() -> None:
        raise RuntimeError("request with t0ken-from-env refused")
    with pytest.raises(StepFailed) as info:  # any later API error hides the driver's token
        _libcloud.api("linode", "list_nodes", leaky)
    assert "t0ken-from-env" not in str(info.value) and "***" in str(info.value)


def test_vsphere_driver_needs_host_user_and_password(use_config: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VSPHERE_PASSWORD", raising=False)
    vsphere = cloud.PROVIDERS["vsphere"]
    with pytest.raises(ConfigError, match="providers.vsphere.host"):
        vsphere.make_driver(use_config({}))
    with pytest.raises(ConfigError, match="providers.vsphere.user"):
        vsphere.make_driver(use_config({"providers": {"vsphere": {"host": "vc"}}}))
    with pytest.raises(ConfigError, match="VSPHERE_PASSWORD"):
        vsphere.make_driver(use_config(
            {"providers": {"vsphere": {"host": "vc", "user": "jarvis"}}}))


def test_ec2_driver_refuses_an_unknown_region(use_config: Any) -> None:
    cfg = use_config({"providers": {"ec2": {"key": "k", "secret": "s", "region": "mars-1"}}})
    with pytest.raises(ConfigError, match="'mars-1' is not an EC2 region"):
        cloud.PROVIDERS["ec2"].make_driver(cfg)


def test_seed_style_tasks_are_registered_under_their_silos_names() -> None:
    """``@task(name=...)`` names them: the function itself stays workers.cloud's."""
    info = worker.lookup("vmware:deploy")
    assert info.name == "vmware:deploy" and info.undo == "vmware:destroy"
    assert info.doc.startswith("Create the vsphere node") and info.writes == ("node",)
    assert info.func.__module__ == "workers.cloud"
    assert not any(name.startswith("cloud:") and name.endswith("_task") for name in worker.REGISTRY)


def test_provider_names_and_aliases() -> None:
    assert cloud.canonical("Linode") == "linode"
    assert cloud.canonical("AWS") == "ec2" and cloud.canonical("VMware") == "vsphere"
    with pytest.raises(StepFailed, match="not a cloud provider"):
        cloud.canonical("local")
    with pytest.raises(StepFailed, match="instance.provider is not set"):
        cloud.provider_of({"instance": {"hostname": "loki"}})
    moved = {"instance": {"hostname": "loki", "provider": "ec2"},
             "node": {"provider": "linode", "id": "123"}}
    assert cloud.provider_of(moved) == "linode"  # destroy acts where the old node is
    assert cloud.provider_of(moved, design_first=True) == "ec2"  # create where the design says


def test_vsphere_sizes_come_from_the_configured_flavors(use_config: Any) -> None:
    cfg = use_config({})
    vsphere = cloud.PROVIDERS["vsphere"]
    s = vsphere.settings(cfg)
    size = vsphere.choose_size(None, _catalog.wanted_size({"grade": "medium"}, "vsphere",
                                                                 cfg), s)
    assert (size.ram, size.disk, size.extra["cpu"]) == (4096, 40, 2)
    with pytest.raises(StepFailed, match="unknown size 'huge' for vsphere.*small"):
        vsphere.choose_size(None, "huge", s)
    with pytest.raises(StepFailed, match="unknown grade 'tiny'"):
        _catalog.wanted_size({"grade": "tiny"}, "ec2", cfg)


def test_keys_skip_dsa_and_client_tokens_follow_the_deployment() -> None:
    clip = design(sshpubkey=DSA_KEY)
    assert _node_keys.public_keys(clip) == [clip["deploy_key"]["public_key"]]
    operator = design()["deploy_key"]["public_key"]
    with_operator = {**clip, "instance": {**clip["instance"], "sshpubkey": operator}}
    assert _node_keys.public_keys(with_operator)[1] \
        == operator
    token = _cloud_ec2.client_token(clip)
    assert token == _cloud_ec2.client_token(copy.deepcopy(clip)) and len(token) <= 64
    assert _cloud_ec2.client_token({**clip, "node": {"generation": 1}}) != token
    assert _cloud_ec2.client_token(design()) != token  # another deployment, another deploy key


def test_api_errors_are_one_line_without_secrets() -> None:
    def fail() -> None:
        raise RuntimeError("signature for s3cr3t-value\nwas rejected")
    with pytest.raises(StepFailed) as info:
        _libcloud.guard("ec2 create_node", ["s3cr3t-value"], fail)
    assert str(info.value) == "ec2 create_node: RuntimeError: signature for *** was rejected"


def test_addresses_include_linodes_ipv6_from_extra() -> None:
    from libcloud.compute.base import Node
    linode = Node(id="1", name="loki", state=NodeState.RUNNING, public_ips=["45.79.1.2"],
                  private_ips=["192.168.1.2"], driver=None,
                  extra={"ipv6": "2600:3c00::f03c:91ff:fe00:1/128"})
    assert _provider.addresses(linode) == ("45.79.1.2", "2600:3c00::f03c:91ff:fe00:1",
                                           "192.168.1.2")


# ---- a node id in the clipboard is not authority ----------------------------------------------

def test_another_hosts_node_id_is_never_adopted_powered_off_or_destroyed(
        moto_ec2: MotoEC2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old hole: a design-supplied node.id was kept as "the" node, and a rollback
    (node:destroy) destroyed it. Designs can no longer carry node:, and the provider
    check holds even for a clipboard that does."""
    cfg = ec2_config(moto_ec2)
    victim = output(call("cloud:create", design(hostname="odin", fqdn="odin.example.com"), cfg,
                         tmp_path, monkeypatch))["node"]
    forged = {**design(), "node": {"provider": "ec2", "id": victim["id"]}}
    for step_name in ("cloud:create", "cloud:wait_running", "cloud:poweroff", "cloud:destroy",
                      "node:poweroff", "node:destroy"):
        result = call(step_name, forged, cfg, tmp_path, monkeypatch)
        assert result.returncode == 1, (step_name, result.stderr)
        assert (f"ec2 node {victim['id']} is not loki's: it is named 'odin'; not touched"
                in result.stderr), (step_name, result.stderr)
    [live] = live_nodes(moto_ec2)
    assert live.id == victim["id"] and live.state == NodeState.RUNNING


def test_a_node_that_only_shares_the_hosts_name_is_not_destroyed_by_a_redeploy(
        moto_ec2: MotoEC2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone else's instance named loki (no jarvis-host tag): a redeploy stops there."""
    ec2 = driver(moto_ec2)
    size = next(s for s in ec2.list_sizes() if s.id == "t3.micro")
    image = ec2.list_images(ex_filters={"name": IMAGE})[0]
    theirs = ec2.create_node(name="loki", size=size, image=image)
    for step_name in ("cloud:destroy", "cloud:poweroff"):
        result = call(step_name, design(), ec2_config(moto_ec2), tmp_path, monkeypatch)
        assert result.returncode == 1
        assert f"it has no {_cloud_ec2.HOST_TAG}=loki tag" in result.stderr
    [live] = live_nodes(moto_ec2)
    assert live.id == theirs.id and live.state == NodeState.RUNNING


def test_create_tags_the_node_with_its_host(moto_ec2: MotoEC2, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    node = output(call("cloud:create", design(), ec2_config(moto_ec2), tmp_path,
                       monkeypatch))["node"]
    [live] = live_nodes(moto_ec2)
    assert live.id == node["id"] and live.extra["tags"][_cloud_ec2.HOST_TAG] == "loki"
    assert cloud.PROVIDERS["ec2"].owner_problem(live, "loki") is None
    assert cloud.PROVIDERS["ec2"].owner_problem(live, "odin") == "it is named 'loki'"


def test_the_seeds_debian_6_is_deployed_as_a_current_debian_with_a_warning(
        moto_ec2: MotoEC2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped alias looks for Debian's own AMIs (none in moto: refused, although this
    account has one named alike); an operator's "<owner>:<name>" alias picks the newest of
    that owner's, and the step's log says the host gets something else than it asked for."""
    ec2 = driver(moto_ec2)
    builder = output(call("cloud:create", design(hostname="builder"), ec2_config(moto_ec2),
                          tmp_path, monkeypatch))["node"]
    [node] = [n for n in ec2.list_nodes() if n.id == builder["id"]]
    older = ec2.create_image(node, "debian-12-amd64-20240101-0000")
    newer = ec2.create_image(node, "debian-12-amd64-20250101-0000")
    owner = ec2.list_images(ex_image_ids=[newer.id])[0].extra["owner_id"]
    ec2.destroy_node(node)
    seed = design(size=512, guestid="Debian 6", datacenter=None)

    shipped = call("cloud:create", seed, ec2_config(moto_ec2), tmp_path, monkeypatch)
    assert shipped.returncode == 1
    assert "unknown image 'debian-12-amd64-*' for ec2" in shipped.stderr
    assert "AMI names owned by 136693071363" in shipped.stderr
    assert live_nodes(moto_ec2) == []

    cfg = ec2_config(moto_ec2, aliases={"image": {"debian 6": f"{owner}:debian-12-amd64-*"}})
    result = call("cloud:create", seed, cfg, tmp_path, monkeypatch)
    created = output(result)["node"]
    assert created["image"] in (older.id, newer.id)
    [live] = live_nodes(moto_ec2)
    assert live.extra["instance_type"] == "t3.nano"      # the shipped size alias: 512 MB
    assert (f"WARNING workers.cloud: instance.guestid 'Debian 6' is deployed as image "
            f"'{owner}:debian-12-amd64-*' at ec2 (providers.ec2.aliases.image), not as the "
            "design names it") in result.stderr
    assert "instance.size '512' is deployed as size 't3.nano'" in result.stderr


def test_linodes_shipped_aliases_map_the_seed_to_current_names(
        use_config: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = cloud.PROVIDERS["linode"].settings(use_config({}))
    with caplog.at_level(logging.INFO, logger="workers.cloud"):
        assert _catalog.alias(s, "image", "Debian 6", "linode") == ("linode/debian12", True)
        assert _catalog.alias(s, "image", "debian 7", "linode") == ("linode/debian12", True)
        assert _catalog.alias(s, "size", "512", "linode") == ("g6-nanode-1", True)
        assert _catalog.alias(s, "location", "Atlanta", "linode") == ("us-southeast", True)
        assert _catalog.alias(s, "image", "linode/debian12", "linode") == ("linode/debian12", False)
        assert _catalog.alias(s, "image", "Debian 12", "linode") == ("Debian 12", False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        ("instance.guestid 'Debian 6' is deployed as image 'linode/debian12' at linode "
         "(providers.linode.aliases.image), not as the design names it"),
        ("instance.guestid 'debian 7' is deployed as image 'linode/debian12' at linode "
         "(providers.linode.aliases.image), not as the design names it"),
        ("instance.size '512' is deployed as size 'g6-nanode-1' at linode "
         "(providers.linode.aliases.size), not as the design names it")]
    dropped = cloud.PROVIDERS["linode"].settings(use_config(
        {"providers": {"linode": {"aliases": {"image": {"Debian 6": ""}}}}}))
    assert _catalog.alias(dropped, "image", "Debian 6", "linode") == ("Debian 6", False)
