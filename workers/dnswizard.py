"""DNS for a new host: A, AAAA and SSHFP records by RFC 2136 dynamic update,
and PTR records for its addresses in the reverse zones configured.

libcloud's DNS drivers have neither RFC 2136 nor SSHFP, so updates go straight
to the zone's primary with dnspython, signed with a TSIG key (config ``dns``).
The step states the desired records (replace, not add), so re-running it, or
redeploying a host whose address changed, leaves exactly one current set; it
then asks the same server for the records back, so "done" means served.

PTR records (``dns.reverse_zones``, a list because IPv4 and IPv6 addresses live
in different reverse zones) go beside A/AAAA: each address whose reverse name
lies in a configured zone gets a PTR naming the host, an address in none gets
no PTR (logged). Before writing, the step reads the addresses the name serves
now, so a redeploy that moved the host removes its PTR at the old address; and
removal deletes only a PTR that names this host, never another host's.

The TSIG secret is only ever handed to dnspython: it is not logged, not put in
an error, not written to the clipboard.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.tsig
import dns.update

from clipboard import config
from clipboard.errors import ConfigError, StepFailed
from clipboard.settings import DesignsSettings, DnsSettings
from clipboard.worker import Need, task
from workers import core

log = logging.getLogger(__name__)

SETTINGS = (DnsSettings, DesignsSettings)

MANAGED_TYPES = ("A", "AAAA", "SSHFP")
FQDN_HINT = "set it in the design, or set dns.zone (or designs.domain) to derive it"
_TSIG_ERRORS = {dns.tsig.PeerBadSignature: "BADSIG", dns.tsig.PeerBadKey: "BADKEY",
                dns.tsig.PeerBadTime: "BADTIME", dns.tsig.PeerBadTruncation: "BADTRUNC"}


@dataclass(frozen=True)
class Target:
    """Where and how to send updates, from the ``dns`` configuration section."""

    server: str
    port: int
    zone: dns.name.Name
    ttl: int
    timeout: float
    key: dns.tsig.Key | None
    reverse_zones: tuple[dns.name.Name, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"


def _tsig_key(section: DnsSettings) -> dns.tsig.Key | None:
    """The TSIG key, or None when no key name is configured (unsigned updates)."""
    name = section.tsig_key_name
    if not name:
        return None
    secret = section.tsig_secret.require()
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("dns.tsig_secret is not valid base64 (the value is not shown)") from None
    algorithm = section.tsig_algorithm
    try:
        return dns.tsig.Key(name, raw, algorithm)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"dns.tsig_key_name/tsig_algorithm are not usable: {exc}") from None


def _fqdn(clipboard: dict[str, Any]) -> str:
    fqdn = core.fqdn_of(clipboard.get("instance") or {}, config.current())
    if not fqdn:
        raise StepFailed(f"instance.fqdn is missing: {FQDN_HINT}")
    return fqdn


def _configured(cfg: config.Config) -> bool:
    return bool(cfg.dns.server)


def _needs(cfg: config.Config, *paths: str) -> tuple[Need, ...]:
    """What a dnswizard step needs: nothing when DNS is not configured (it changes
    nothing), the fqdn only when no domain derives it."""
    if not _configured(cfg):
        return ()
    needs = tuple(Need(p) for p in paths)
    return needs if core.domain(cfg) else (*needs, Need("instance.fqdn", FQDN_HINT))


def _target(fqdn: str) -> Target:
    """The configured target for ``fqdn`` (DNS is configured: ``dns.server`` is set)."""
    section = config.current().dns
    server = section.server
    try:
        ipaddress.ip_address(str(server))
    except ValueError:
        raise ConfigError(f"dns.server must be an IP address (the primary's), not {server!r}") from None
    zone_text = section.zone or fqdn.partition(".")[2]
    zone = dns.name.from_text(zone_text)
    if not dns.name.from_text(fqdn).is_subdomain(zone):
        raise StepFailed(f"{fqdn} is not inside the configured zone {zone.to_text(True)}")
    try:
        reverse = tuple(dns.name.from_text(z) for z in section.reverse_zones)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"dns.reverse_zones holds a name that is not a DNS name: {exc}") from None
    return Target(server=str(server), port=section.port, zone=zone, ttl=section.ttl,
                  timeout=section.timeout, key=_tsig_key(section), reverse_zones=reverse)


def _desired(clipboard: dict[str, Any]) -> dict[str, list[str]]:
    """The rdata texts each managed type should hold, from node and ssh."""
    node = clipboard.get("node") or {}
    if not node.get("ip"):
        raise StepFailed("node.ip is missing: the host has no address to publish yet")
    records: dict[str, list[str]] = {"A": [_canonical("A", node["ip"], "node.ip")],
                                     "AAAA": [], "SSHFP": []}
    if node.get("ipv6"):
        records["AAAA"] = [_canonical("AAAA", node["ipv6"], "node.ipv6")]
    for entry in (clipboard.get("ssh") or {}).get("sshfp") or []:
        try:
            text = f"{int(entry['algorithm'])} {int(entry['fp_type'])} {entry['fingerprint']}"
        except (KeyError, TypeError, ValueError):
            raise StepFailed("ssh.sshfp holds an entry that is not {algorithm, fp_type, "
                             f"fingerprint}}: {str(entry)[:120]}") from None
        text = _canonical("SSHFP", text, "ssh.sshfp")
        if text not in records["SSHFP"]:
            records["SSHFP"].append(text)
    return records


def _canonical(rdtype: str, value: Any, where: str) -> str:
    """The record's text as the server will answer it (validates the value too)."""
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(value))
    except (dns.exception.DNSException, ValueError) as exc:
        raise StepFailed(f"{where} is not a valid {rdtype} record value ({str(value)[:80]!r}): "
                         f"{exc}") from None
    return rdata.to_text().lower()


def _update(target: Target, zone: dns.name.Name | None = None) -> dns.update.UpdateMessage:
    zone = zone or target.zone
    if target.key is None:
        return dns.update.UpdateMessage(zone)
    return dns.update.UpdateMessage(zone, keyring=target.key)


def _send(target: Target, message: dns.update.UpdateMessage, fqdn: str, action: str) -> None:
    """Send one update over TCP; any answer but NOERROR fails the step, naming the rcode."""
    try:
        response = dns.query.tcp(message, target.server, timeout=target.timeout, port=target.port)
    except dns.tsig.PeerError as exc:
        error = _TSIG_ERRORS.get(type(exc), type(exc).__name__)
        raise StepFailed(f"DNS {action} of {fqdn} answered NOTAUTH by {target.where}: TSIG error "
                         f"{error} (wrong key name, secret or algorithm, or clock skew?)") from None
    except dns.exception.Timeout:
        raise StepFailed(f"DNS {action} of {fqdn}: no answer from {target.where} "
                         f"within {target.timeout:g}s") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise StepFailed(f"DNS {action} of {fqdn} via {target.where} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        assert message.origin is not None, "_update names the zone"
        signed = "signed" if target.key is not None else "unsigned"
        raise StepFailed(f"DNS {action} of {fqdn} in zone {message.origin.to_text(True)} answered "
                         f"{dns.rcode.to_text(rcode)} by {target.where} ({signed} update)")
    if target.key is not None and not response.had_tsig:
        raise StepFailed(f"DNS {action} of {fqdn}: {target.where} answered without a TSIG "
                         "signature; the result cannot be trusted")


def _served(target: Target, fqdn: str, rdtype: str) -> set[str]:
    """What the server answers now for one name and type (UDP, TCP when truncated)."""
    query = dns.message.make_query(fqdn, rdtype)
    try:
        response, _ = dns.query.udp_with_fallback(query, target.server, timeout=target.timeout,
                                                  port=target.port)
    except (dns.exception.DNSException, OSError) as exc:
        raise StepFailed(f"DNS check of {fqdn} {rdtype} at {target.where} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise StepFailed(f"DNS check of {fqdn} {rdtype} at {target.where} answered "
                         f"{dns.rcode.to_text(rcode)}")
    wanted = dns.rdatatype.from_text(rdtype)
    return {rdata.to_text().lower() for rrset in response.answer
            if rrset.rdtype == wanted for rdata in rrset}


def _reverse_zone(target: Target, address: str) -> tuple[str, dns.name.Name] | None:
    """The PTR name of ``address`` and the configured reverse zone holding it, if any."""
    name = dns.reversename.from_address(address)
    zone = next((z for z in target.reverse_zones if name.is_subdomain(z)), None)
    return (name.to_text(True), zone) if zone is not None else None


def _set_ptrs(target: Target, fqdn: str, addresses: list[str], old: set[str]) -> list[str]:
    """Point the PTR of each address (in a configured reverse zone) at ``fqdn``, remove the
    PTR naming ``fqdn`` at each old address no longer the host's; the PTR names written."""
    _remove_ptrs(target, fqdn, old - set(addresses))
    written = []
    for address in addresses:
        found = _reverse_zone(target, address)
        if found is None:
            log.info("no reverse zone configured for %s (dns.reverse_zones); no PTR", address)
            continue
        name, zone = found
        message = _update(target, zone)
        message.replace(name + ".", target.ttl, "PTR", fqdn + ".")
        _send(target, message, name, "update")
        served = _served(target, name, "PTR")
        if served != {fqdn + "."}:
            raise StepFailed(f"DNS update of {name} was accepted but {target.where} serves "
                             f"PTR {sorted(served) or 'nothing'}, not {fqdn}.")
        written.append(name)
    return written


def _remove_ptrs(target: Target, fqdn: str, addresses: set[str]) -> None:
    """Delete the PTR naming ``fqdn`` at each address (another host's PTR stays)."""
    for address in sorted(addresses):
        found = _reverse_zone(target, address)
        if found is None:
            continue
        name, zone = found
        message = _update(target, zone)
        message.delete(name + ".", "PTR", fqdn + ".")
        _send(target, message, name, "delete")
        if fqdn + "." in _served(target, name, "PTR"):
            raise StepFailed(f"DNS delete of {name} was accepted but {target.where} still "
                             f"serves PTR {fqdn}.")
        log.info("PTR %s -> %s removed", name, fqdn)


def _addresses(target: Target, fqdn: str) -> set[str]:
    """The addresses the host's name serves now (to find PTRs that name it)."""
    return _served(target, fqdn, "A") | _served(target, fqdn, "AAAA") if target.reverse_zones \
        else set()


@task(undo="dnswizard:delete_host", writes=("dns",),
      needs=lambda cfg: _needs(cfg, "node.ip"))
def update_host(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Replace the host's A, AAAA and SSHFP records (TSIG-signed RFC 2136) and the PTRs of
    its addresses in the configured reverse zones, and confirm them."""
    if not _configured(config.current()):
        log.info("DNS not configured (dns.server is null); no records changed")
        return None
    fqdn = _fqdn(clipboard)
    target = _target(fqdn)
    records = _desired(clipboard)
    old = _addresses(target, fqdn)
    message = _update(target)
    for rdtype in MANAGED_TYPES:
        if records[rdtype]:
            message.replace(fqdn + ".", target.ttl, rdtype, *records[rdtype])
        else:
            message.delete(fqdn + ".", rdtype)
    _send(target, message, fqdn, "update")
    for rdtype in MANAGED_TYPES:
        served = _served(target, fqdn, rdtype)
        if served != set(records[rdtype]):
            raise StepFailed(f"DNS update of {fqdn} was accepted but {target.where} serves "
                             f"{rdtype} {sorted(served) or 'nothing'}, not {records[rdtype] or 'nothing'}")
    ptr = _set_ptrs(target, fqdn, records["A"] + records["AAAA"], old)
    summary = ", ".join(f"{len(records[t])} {t}" for t in MANAGED_TYPES if records[t])
    log.info("DNS for %s set on %s in zone %s: %s%s", fqdn, target.where,
             target.zone.to_text(True), summary, f", {len(ptr)} PTR" if ptr else "")
    clipboard["dns"] = {"name": fqdn, "zone": target.zone.to_text(True), "server": target.where,
                        "ttl": target.ttl, "a": records["A"], "aaaa": records["AAAA"],
                        "sshfp": records["SSHFP"], "ptr": ptr}
    return clipboard


@task(writes=("dns",), needs=lambda cfg: _needs(cfg))
def delete_host(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Remove the host's A, AAAA and SSHFP records (nothing else at that name) and the PTRs
    naming it at its addresses; idempotent."""
    if not _configured(config.current()):
        log.info("DNS not configured (dns.server is null); no records removed")
        return None
    fqdn = _fqdn(clipboard)
    recorded = str((clipboard.get("dns") or {}).get("name") or "")
    if recorded and recorded.rstrip(".").lower() != fqdn:
        raise StepFailed(f"the recorded DNS name {recorded[:100]!r} is not this host's name "
                         f"{fqdn}: nothing removed")
    target = _target(fqdn)
    _remove_ptrs(target, fqdn, _addresses(target, fqdn))
    message = _update(target)
    for rdtype in MANAGED_TYPES:
        message.delete(fqdn + ".", rdtype)
    _send(target, message, fqdn, "delete")
    for rdtype in MANAGED_TYPES:
        left = _served(target, fqdn, rdtype)
        if left:
            raise StepFailed(f"DNS delete of {fqdn} was accepted but {target.where} still serves "
                             f"{rdtype} {sorted(left)}")
    log.info("DNS records %s of %s removed on %s", "/".join(MANAGED_TYPES), fqdn, target.where)
    clipboard.pop("dns", None)
    return clipboard
