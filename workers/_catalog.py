"""Choosing a node's size, image and location by the names a design gives.

Designs name things the way a person (or the seed, years ago) wrote them:
``Debian 6``, ``512``, ``Atlanta``. ``providers.<provider>.aliases`` translates
them into the provider's current names; a size or image alias is a warning in
the step's log, because the host then gets something other than its design
names. An unknown name fails with a short list of the valid ones closest to it.
The provider classes (workers/_cloud_*.py) override what their API does
differently (EC2 looks images up by owner, vSphere sizes are configured flavors).
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from libcloud.compute.base import NodeDriver, NodeImage, NodeLocation, NodeSize

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.settings import CloudSettings
from workers._libcloud import api

# The step's log names the silo the operator ran, not this helper module.
log = logging.getLogger("workers.cloud")

SUGGESTIONS = 6
ALIASED_FIELD = {"size": "size", "image": "guestid", "location": "datacenter"}

T = TypeVar("T")


def alias(s: CloudSettings, kind: str, wanted: str, provider: str) -> tuple[str, bool]:
    """The provider's name for the design's ``wanted`` size, image or location, and whether
    an alias changed it (``providers.<provider>.aliases.<kind>``, case-insensitive).

    A size or image alias gives the host something other than what its design names
    (the seed's ``Debian 6`` becomes a current Debian), so it is a warning, which the
    step's log keeps; a location alias only translates a place's name.
    """
    table: Mapping[str, str] = getattr(s.aliases, kind)
    lowered = {k.lower(): v for k, v in table.items() if v}
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


def unknown(kind: str, wanted: str, provider: str, names: list[str], hint: str = "") -> StepFailed:
    """The error for a name the provider does not know, listing the closest valid ones."""
    names = sorted(set(names))
    if len(names) <= SUGGESTIONS:
        shown = names
    else:
        shown = difflib.get_close_matches(wanted, names, n=SUGGESTIONS, cutoff=0.3) \
            or names[:SUGGESTIONS]
    listed = f"; valid {kind}s include: {', '.join(shown)} ({len(names)} in all)" if names else ""
    return StepFailed(f"unknown {kind} {wanted!r} for {provider}{listed}{hint}")


def by_name(items: Iterable[T], wanted: str, keys: Callable[[T], Iterable[Any]]) -> T | None:
    """The item one of whose ``keys`` is ``wanted`` (case-insensitive), else the first whose
    key's part before a comma is: "Atlanta" for "Atlanta, GA, USA"."""
    lowered = wanted.strip().lower()
    items = list(items)
    for item in items:
        if any(str(k).lower() == lowered for k in keys(item) if k):
            return item
    for item in items:
        if any(str(k).split(",")[0].strip().lower() == lowered for k in keys(item) if k):
            return item
    return None


def wanted_size(instance: dict[str, Any], provider: str, cfg: config.Config) -> str:
    """The size name: ``instance.size`` if given, else the grade's size for this provider."""
    size = instance.get("size")
    if size not in (None, ""):
        return str(size)
    grade = instance.get("grade")
    grades = cfg.grades
    if grade in (None, ""):
        raise StepFailed("the design has neither size nor grade "
                         f"(grades: {', '.join(sorted(grades)) or 'none configured'})")
    entry = grades.get(str(grade).lower())
    if entry is None:
        raise StepFailed(f"unknown grade {grade!r} (configured: {', '.join(sorted(grades))})")
    size = entry.get(provider)
    if not size:
        raise StepFailed(f"grade {grade!r} has no size for {provider} "
                         f"(set grades.{str(grade).lower()}.{provider})")
    return str(size)


def listed_size(driver: NodeDriver, provider: str, wanted: str) -> NodeSize:
    """The size from the provider's catalogue, by id or name."""
    sizes = api(provider, "list_sizes", lambda: driver.list_sizes())
    found = by_name(sizes, wanted, lambda z: (z.id, z.name))
    if found is None:
        raise unknown("size", wanted, provider, [str(z.id) for z in sizes])
    return found


def listed_image(driver: NodeDriver, provider: str, wanted: str) -> NodeImage:
    """The image from the provider's catalogue, by id or name."""
    images = api(provider, "list_images", lambda: driver.list_images())
    found = by_name(images, wanted, lambda i: (i.id, i.name))
    if found is None:
        raise unknown("image", wanted, provider, [str(i.name) for i in images])
    return found


def listed_location(driver: NodeDriver, provider: str, wanted: str | None, required: bool,
                    s: CloudSettings) -> NodeLocation | None:
    """The location by id, name or availability zone; None when the design names none and
    the provider picks one itself (not ``required``)."""
    if wanted in (None, ""):
        if required:
            locations = api(provider, "list_locations", lambda: driver.list_locations())
            raise unknown("location", "", provider, [str(loc.id) for loc in locations],
                          " (set instance.datacenter)")
        return None
    wanted, _ = alias(s, "location", str(wanted), provider)
    locations = api(provider, "list_locations", lambda: driver.list_locations())
    found = by_name(locations, wanted, lambda loc: (
        loc.id, loc.name, getattr(getattr(loc, "availability_zone", None), "name", None)))
    if found is None:
        raise unknown("location", wanted, provider, [str(loc.name) for loc in locations])
    return found
