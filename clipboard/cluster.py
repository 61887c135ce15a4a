"""Clusters in one pass: one design lists several hosts with roles; it is expanded
into one host design per host, each role mapped to its pipeline, and the waits
between hosts (``wait:host``) are checked before anything runs.

    cluster: shop                  # (or name:) the cluster's name, an RFC 1123 label
    defaults:                      # (or instance:) shared by every host
      provider: local
      domain: example.com          # fqdn = <hostname>.<domain> unless a host gives one
    roles:                         # optional; the config's roles: section otherwise
      db: {pipeline: db, grade: large}
      web: web                     # just the pipeline
    hosts:                         # a list, or a mapping hostname -> entry
      - {hostname: db1, role: db}
      - {hostname: "web{n}", role: web, count: 18}   # web1 ... web18
    notes: {ticket: OPS-12}        # free-form, copied into every host's clipboard

Nothing else: the shared defaults, a role's ``instance:`` and each host entry
hold the instance fields of ``clipboard.schema`` (plus ``domain``; an entry also
``role``, ``count`` and ``pipeline``), and any other key is refused with the
schema's reasons (``node`` is written by a step, ``force`` said by the operator).
Sizes are checked by arithmetic before anything is expanded: each ``count`` and
the sum of all hosts against ``clusters.max_hosts``, so ``count: 100000000``
costs nothing, dry run included.

A host's instance is, from weakest to strongest: the shared defaults, its role's
``instance:`` (design roles only), its role's grade, its own entry. Its pipeline
is its entry's ``pipeline:``, else its role's (design, then config), else the
deploy command's ``pipeline=``, else the default pipeline.

Waits are checked step by step, the way they would run: a host's step waits for
its previous step, and a ``wait:host`` step also waits for the step (or the end)
of every host it names. A cycle in that graph is a deadlock, refused here with
the hosts and steps that form it. The same graph gives the launch order: hosts
that wait on nobody start first, so they are first in line for capped steps.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipboard import redact, schema
from clipboard.config import Config
from clipboard.errors import DesignError, JarvisError
from clipboard.records import State
from clipboard.steps import ROLE_RE, Wait
from clipboard.validate import check_fqdn, check_hostname, lower_keys

if TYPE_CHECKING:
    from clipboard.run import Plan

log = logging.getLogger(__name__)

CLUSTER_KEYS = {"cluster", "name", "hosts", "defaults", "instance", "roles", "notes"}
ENTRY_KEYS = {"role", "count", "pipeline"}
ROLE_KEYS = {"pipeline", "grade", "instance"}
SHARED_KEYS = {"domain"}  # instance keys a cluster design may add: fqdn = <hostname>.<domain>
NEVER_SHARED = {"hostname", "fqdn"}
LABEL_MAX = 128
COUNT_MARK = "{n}"


@dataclass
class HostPlan:
    plan: Plan
    role: str | None

    @property
    def hostname(self) -> str:
        return self.plan.hostname


@dataclass
class ClusterPlan:
    name: str
    hosts: list[HostPlan]  # in launch order


def is_cluster(design: dict[str, Any]) -> bool:
    """A design with ``hosts:`` is a cluster; one with ``instance:`` alone is one host."""
    return isinstance(design, dict) and any(str(k).lower() == "hosts" for k in design)


def labels_of(clipboard: dict[str, Any], extra_secret: Iterable[str]) -> dict[str, str]:
    """The instance's short scalar values, as text: what ``status key=value`` filters on.

    Secrets (``redact.is_secret_key``, with the operator's ``extra_secret`` words) are
    left out — a label would let ``status api-key=<guess>`` confirm a guess — and so
    are long values (keys, scripts).
    """
    extra_secret = tuple(extra_secret)
    out: dict[str, str] = {}
    for key, value in (clipboard.get("instance") or {}).items():
        name = str(key).lower()
        if redact.is_secret_key(name, extra_secret):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value).strip().lower()
        else:
            continue
        if text and len(text) <= LABEL_MAX and "\n" not in text:
            out[name] = text
    return out


def _role_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ROLE_RE.match(value.strip().lower()):
        raise DesignError(f"{where}: role {value!r} is not a name of letters, digits, - and _")
    return value.strip().lower()


def _check_fields(values: dict[str, Any], where: str, config: Config,
                  skip: frozenset[str] | set[str] = frozenset()) -> None:
    """The instance fields of a defaults, role or host mapping, held to the schema."""
    for key in SHARED_KEYS & set(values):
        if values[key] is not None and not isinstance(values[key], str):
            raise DesignError(f"`{where}.{key}` must be text (a DNS domain)")
    schema.check_instance({k: v for k, v in values.items() if k not in SHARED_KEYS | skip},
                          where, config)


def _roles(design_roles: Any, config: Config) -> dict[str, dict[str, Any]]:
    """Role -> {pipeline, grade, instance}: the config's roles overlaid with the design's."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in config.section("roles").items():
        role = _role_name(name, "config roles")
        out[role] = {k: v for k, v in (spec or {}).items() if v not in (None, "")}
    for name, spec in lower_keys(design_roles, "roles").items():
        role = _role_name(name, "roles")
        if isinstance(spec, str):
            spec = {"pipeline": spec}
        spec = lower_keys(spec, f"roles.{role}")
        unknown = set(spec) - ROLE_KEYS
        if unknown:
            raise DesignError(f"roles.{role}: unknown keys {sorted(unknown)} "
                              f"(a role has {', '.join(sorted(ROLE_KEYS))})")
        if spec.get("instance") is not None:
            spec["instance"] = lower_keys(spec["instance"], f"roles.{role}.instance")
            _check_fields(spec["instance"], f"roles.{role}.instance", config)
        merged = dict(out.get(role, {}))
        merged.update({k: v for k, v in spec.items() if v not in (None, "")})
        out[role] = merged
    return out


def _entries(hosts: Any) -> list[dict[str, Any]]:
    """The host entries as mappings with lower-case keys, the mapping form unfolded."""
    if isinstance(hosts, dict):
        out = []
        for name, entry in hosts.items():
            entry = lower_keys(entry, f"hosts.{name}")
            if "hostname" in entry and str(entry["hostname"]).lower() != str(name).lower():
                raise DesignError(f"hosts.{name} gives another hostname {entry['hostname']!r}")
            out.append({**entry, "hostname": name})
        return out
    if isinstance(hosts, list):
        return [{"hostname": e} if isinstance(e, str) else lower_keys(e, f"hosts[{i}]")
                for i, e in enumerate(hosts)]
    raise DesignError("hosts: must be a list of host entries or a mapping hostname -> entry")


def _count(entry: dict[str, Any], where: str, limit: int) -> int:
    """How many hosts an entry stands for, refused over ``limit`` before any is made."""
    count = entry.get("count")
    if count is None:
        return 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise DesignError(f"{where}: count must be a positive whole number")
    if count > limit:
        raise DesignError(f"{where}: count {count} is over clusters.max_hosts ({limit})")
    return count


def _counted(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    count = entry.get("count")
    if count is None:
        return [entry]
    template = entry.get("hostname")
    if not isinstance(template, str) or COUNT_MARK not in template:
        raise DesignError(f"{where}: with count, the hostname must hold {COUNT_MARK} "
                          f"(e.g. web{COUNT_MARK})")
    return [{**{k: v for k, v in entry.items() if k != "count"},
             "hostname": template.replace(COUNT_MARK, str(n))} for n in range(1, count + 1)]


def expand(design: dict[str, Any], config: Config, default_pipeline: str | None = None,
           tasks: dict[str, Any] | None = None
           ) -> tuple[str, list[tuple[dict[str, Any], str | None, str | None]]]:
    """The cluster's name and, per host, (host design, role, pipeline name or None).

    ``tasks`` is the workers' catalog, for the schema's reasons (what writes a key).
    """
    top = lower_keys(design, "the cluster design")
    schema.check_top(top, CLUSTER_KEYS, "a cluster design", tasks)
    name = top.get("cluster") or top.get("name")
    if name is None:
        raise DesignError("a cluster design (one with hosts:) needs cluster: <name>")
    try:
        name = check_hostname(name)
    except DesignError as exc:
        raise DesignError(f"cluster name: {exc}") from None
    if "defaults" in top and "instance" in top:
        raise DesignError("give the shared values in defaults: or in instance:, not both")
    shared = lower_keys(top.get("defaults", top.get("instance")), "defaults")
    clash = sorted(NEVER_SHARED & set(shared))
    if clash:
        raise DesignError(f"defaults.{clash[0]} would give every host the same {clash[0]}; "
                          "give it per host (or defaults.domain for the fqdn)")
    _check_fields(shared, "defaults", config)
    roles = _roles(top.get("roles"), config)
    extra = {"notes": top["notes"]} if "notes" in top else {}
    limit = config.clusters.max_hosts
    listed = _entries(top.get("hosts"))
    total = 0
    for i, entry in enumerate(listed):
        _check_fields(entry, f"hosts[{i}]", config, skip=ENTRY_KEYS)
        total += _count(entry, f"hosts[{i}]", limit)
        if total > limit:
            raise DesignError(f"cluster {name} lists more than {limit} hosts "
                              "(clusters.max_hosts)")
    if not total:
        raise DesignError(f"cluster {name} lists no hosts")
    entries: list[dict[str, Any]] = []
    for i, entry in enumerate(listed):
        entries.extend(_counted(entry, f"hosts[{i}]"))
    out = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"host {i + 1}"
        try:
            hostname = check_hostname(entry.get("hostname"))
        except DesignError as exc:
            raise DesignError(f"{where}: {exc}") from None
        where = f"host {hostname}"
        if hostname in seen:
            raise DesignError(f"{where} is listed twice")
        if hostname == name:
            raise DesignError(f"{where} has the cluster's own name; status and cancel would "
                              "not know which one is meant")
        seen.add(hostname)
        role = _role_name(entry["role"], where) if entry.get("role") is not None else None
        spec = roles.get(role or "", {})
        instance = dict(shared)
        instance.update(lower_keys(spec.get("instance"), f"roles.{role}.instance"))
        if spec.get("grade"):
            instance["grade"] = spec["grade"]
        instance.update({k: v for k, v in entry.items() if k not in ENTRY_KEYS})
        domain = instance.pop("domain", None)
        if "fqdn" not in instance and domain:
            instance["fqdn"] = f"{hostname}.{str(domain).strip('.')}"
        if instance.get("fqdn") is not None:
            try:
                check_fqdn(instance["fqdn"], hostname)
            except DesignError as exc:
                raise DesignError(f"{where}: {exc}") from None
        instance["hostname"] = hostname
        instance["cluster"] = name
        if role:
            instance["role"] = role
        pipeline = entry.get("pipeline") or spec.get("pipeline") or default_pipeline
        out.append(({**extra, "instance": instance}, role, pipeline))
    return name, out


def plan(design: dict[str, Any], config: Config,
         plan_host: Callable[[dict[str, Any], str | None], Plan],
         default_pipeline: str | None = None, tasks: dict[str, Any] | None = None
         ) -> ClusterPlan:
    """Every host planned and validated, waits checked; raises before anything runs."""
    name, expanded = expand(design, config, default_pipeline, tasks)
    hosts = []
    for host_design, role, pipeline in expanded:
        hostname = host_design["instance"]["hostname"]
        try:
            hosts.append(HostPlan(plan_host(host_design, pipeline), role))
        except JarvisError as exc:
            raise type(exc)(f"host {hostname}: {exc}") from None
    return ClusterPlan(name, check_waits(name, hosts))


# ------------------------------------------------------------------- the wait graph

Node = tuple[Any, ...]  # ("step", host index, step index) or ("role", role, until)


def _waits(host: HostPlan) -> list[tuple[int, Wait]]:
    return [(i, step.wait) for i, step in enumerate(host.plan.pipeline.steps)
            if step.wait is not None]


def _reach_index(host: HostPlan, until: str) -> int | None:
    """The step index whose success means ``until`` was reached (None: not in its pipeline)."""
    names = [s.name for s in host.plan.pipeline.steps]
    if until == State.READY:
        return len(names) - 1
    return names.index(until) if until in names else None


def check_waits(name: str, hosts: list[HostPlan]) -> list[HostPlan]:
    """Refuse waits that name nobody, a step the target never runs, or form a cycle;
    return the hosts in launch order (those that wait on nobody first)."""
    index = {h.hostname: n for n, h in enumerate(hosts)}
    by_role: dict[str, list[int]] = {}
    for n, host in enumerate(hosts):
        if host.role:
            by_role.setdefault(host.role, []).append(n)
    deps: dict[Node, list[Node]] = {}
    waits_on: dict[int, set[int]] = {}
    for n, host in enumerate(hosts):
        steps = host.plan.pipeline.steps
        for i in range(1, len(steps)):
            deps[("step", n, i)] = [("step", n, i - 1)]
        for i, wait in _waits(host):
            where = f"host {host.hostname} step {i + 1} ({steps[i].name})"
            if wait.host is not None:
                if wait.host not in index:
                    raise DesignError(f"{where}: no host {wait.host} in cluster {name}")
                targets = [index[wait.host]]
            else:
                targets = by_role.get(str(wait.role), [])
                if not targets:
                    known = ", ".join(sorted(by_role)) or "none"
                    raise DesignError(f"{where}: no host in cluster {name} has role {wait.role} "
                                      f"(roles: {known})")
            for t in targets:
                if _reach_index(hosts[t], wait.until) is None:
                    raise DesignError(f"{where}: {hosts[t].hostname}'s pipeline "
                                      f"{hosts[t].plan.pipeline.name} has no step {wait.until}")
            waits_on.setdefault(n, set()).update(targets)
            if wait.role is not None:
                role_node: Node = ("role", wait.role, wait.until)
                deps[role_node] = [("step", t, _reach_index(hosts[t], wait.until)) for t in targets]
                deps.setdefault(("step", n, i), []).append(role_node)
            else:
                deps.setdefault(("step", n, i), []).append(
                    ("step", targets[0], _reach_index(hosts[targets[0]], wait.until)))
    cycle = _find_cycle(deps)
    if cycle:
        raise DesignError("these waits can never finish (a cycle): " + _describe(cycle, hosts))
    order = sorted(range(len(hosts)), key=lambda n: (n in waits_on, n))
    return [hosts[n] for n in order]


def _find_cycle(deps: dict[Node, list[Node]]) -> list[Node] | None:
    """A cycle in the dependency graph, as the list of its nodes, or None (iterative DFS)."""
    state: dict[Node, int] = {}  # 1 = on the stack, 2 = done
    for root in deps:
        if root in state:
            continue
        stack: list[tuple[Node, Iterator[Node]]] = [(root, iter(deps.get(root, ())))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            mark = state.get(child)
            if mark == 1:
                return path[path.index(child):]
            if mark is None:
                state[child] = 1
                stack.append((child, iter(deps.get(child, ()))))
                path.append(child)
    return None


def _describe(cycle: list[Node], hosts: list[HostPlan]) -> str:
    parts = []
    for node in cycle:
        if node[0] != "step":
            continue
        host = hosts[node[1]]
        step = host.plan.pipeline.steps[node[2]]
        if step.wait is not None:
            parts.append(f"{host.hostname} ({step.name})")
    unique = list(dict.fromkeys(parts))
    return " → ".join(unique + unique[:1])
