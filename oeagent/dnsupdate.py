"""RFC 2136 dynamic updates signed with TSIG, zone finding, and waiting for the answer.

Used by the dns-01 challenge (TXT records) and by the publishers (IPSECKEY, TLSA): callers
describe changes as RRsets (add / replace / delete exact values) with optional prerequisites,
and the whole set is one atomic update message (RFC 2136 §3.4: all or nothing).

Talks to one server, the zone's primary: updates go over TCP (a signed update with several
records can exceed 512 octets, and TCP has no spoofed-reply window), zone finding and waiting
query it with RD clear and require AA, so no cache anywhere can answer for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from oeagent.errors import DnsUpdateError
from oeagent.secrets import Secret

log = logging.getLogger(__name__)

TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-md5": dns.tsig.HMAC_MD5,
}


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str  # a key of TSIG_ALGORITHMS
    secret: Secret = field(repr=False)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        if self.algorithm not in TSIG_ALGORITHMS:
            raise DnsUpdateError(f"unsupported TSIG algorithm {self.algorithm!r}")
        name = dns.name.from_text(self.name)
        return {name: dns.tsig.Key(name, self.secret.reveal(), TSIG_ALGORITHMS[self.algorithm])}


@dataclass(frozen=True)
class Server:
    """The primary that accepts updates and answers authoritatively."""

    address: str
    port: int = 53
    key: TsigKey | None = None
    timeout: float = 10.0

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Change:
    """``add`` the rrset's values, ``replace`` the whole rrset by them, or ``delete`` exactly
    its values (an rrset without values deletes every record of that type at the name)."""

    action: str  # "add" | "replace" | "delete"
    rrset: dns.rrset.RRset


@dataclass(frozen=True)
class Prerequisite:
    """``present``: the rrset exists (with exactly these values if any are given);
    ``absent``: no record of this type exists at the name (RFC 2136 §2.4)."""

    kind: str  # "present" | "absent"
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rrset: dns.rrset.RRset | None = None


def build_update(zone: dns.name.Name, changes: Iterable[Change],
                 prerequisites: Iterable[Prerequisite] = (),
                 key: TsigKey | None = None) -> dns.update.UpdateMessage:
    """The update message for ``changes`` (pure: no network)."""
    if key is not None:
        msg = dns.update.UpdateMessage(zone, keyring=key.keyring(),
                                       keyname=dns.name.from_text(key.name),
                                       keyalgorithm=TSIG_ALGORITHMS[key.algorithm])
    else:
        msg = dns.update.UpdateMessage(zone)
    for pre in prerequisites:
        if pre.kind == "present":
            if pre.rrset is not None and len(pre.rrset):
                # Rdatas, not the rrset: dnspython then sends TTL 0, as RFC 2136 §2.4.2
                # requires (BIND answers FORMERR to a prerequisite with a TTL).
                msg.present(pre.name, *pre.rrset)
            else:
                msg.present(pre.name, pre.rdtype)
        elif pre.kind == "absent":
            msg.absent(pre.name, pre.rdtype)
        else:
            raise ValueError(f"unknown prerequisite {pre.kind!r}")
    for change in changes:
        rrset = change.rrset
        if not rrset.name.is_subdomain(zone):
            raise ValueError(f"{rrset.name} is not in zone {zone}")
        if change.action == "add":
            msg.add(rrset.name, rrset)
        elif change.action == "replace":
            msg.replace(rrset.name, rrset)
        elif change.action == "delete":
            if len(rrset):
                msg.delete(rrset.name, rrset)
            else:
                msg.delete(rrset.name, rrset.rdtype)
        else:
            raise ValueError(f"unknown change {change.action!r}")
    return msg


# What to check when the server says no; the rcode name goes first in every message.
_RCODE_HINTS = {
    dns.rcode.REFUSED: "the server refused the update: check its update-policy / allow-update "
                       "grants this TSIG key the names and types we change",
    dns.rcode.NOTAUTH: "the server is not authoritative for the zone or rejected the TSIG "
                       "key: check the zone, key name, secret and algorithm",
    dns.rcode.NOTZONE: "a name is outside the zone: check challenge.dns.zone",
    dns.rcode.YXRRSET: "a prerequisite failed (records exist that should not): re-read and retry",
    dns.rcode.NXRRSET: "a prerequisite failed (records are missing or changed): re-read and retry",
    dns.rcode.YXDOMAIN: "a prerequisite failed (the name exists)",
    dns.rcode.NXDOMAIN: "a prerequisite failed (the name does not exist)",
    dns.rcode.SERVFAIL: "the server failed to apply the update: see its log",
    dns.rcode.NOTIMP: "the server does not implement dynamic updates",
    dns.rcode.FORMERR: "the server could not parse the update",
}


def explain_rcode(rcode: dns.rcode.Rcode, zone: dns.name.Name, server: Server) -> str:
    hint = _RCODE_HINTS.get(rcode, "unexpected answer")
    key = f" with TSIG key {server.key.name} ({server.key.algorithm})" if server.key else ""
    return (f"DNS update of zone {zone.to_text(omit_final_dot=True)} at {server}{key} failed: "
            f"{dns.rcode.to_text(rcode)}: {hint}")


def explain_tsig_error(exc: Exception, server: Server) -> str:
    """What a TSIG failure means for the operator; never includes the secret."""
    key = server.key
    which = f"TSIG key {key.name!r} ({key.algorithm})" if key else "an unsigned request"
    if isinstance(exc, dns.tsig.PeerBadKey):
        why = ("BADKEY: the server does not know this key name/algorithm; "
               "check tsig_key_name and tsig_algorithm")
    elif isinstance(exc, dns.tsig.PeerBadSignature):
        why = "BADSIG: the signature does not verify; check the secret in tsig_secret_file"
    elif isinstance(exc, dns.tsig.PeerBadTime):
        why = "BADTIME: the clocks of this host and the server differ too much; check NTP"
    else:
        why = f"{type(exc).__name__}: the reply's TSIG does not verify ({exc}); check the key"
    return f"DNS server {server} rejected {which}: {why}"


_PREREQUISITE_RCODES = (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN,
                        dns.rcode.YXDOMAIN)


class PrerequisiteFailed(DnsUpdateError):
    """The zone changed since we read it (a compare-and-swap lost): re-read and retry."""

    def __init__(self, message: str, rcode: dns.rcode.Rcode) -> None:
        super().__init__(message)
        self.rcode = rcode


def send_update(server: Server, msg: dns.update.UpdateMessage) -> None:
    """Send ``msg`` over TCP; raise DnsUpdateError unless the server answers NOERROR."""
    zone = msg.zone[0].name if msg.zone else dns.name.root
    try:
        response = dns.query.tcp(msg, server.address, port=server.port, timeout=server.timeout)
    except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadTime,
            dns.message.UnknownTSIGKey) as exc:
        raise DnsUpdateError(explain_tsig_error(exc, server)) from None
    except dns.exception.Timeout:
        raise DnsUpdateError(
            f"DNS server {server} did not answer the update within {server.timeout:g} s"
        ) from None
    except EOFError:
        # dnspython's word for a TCP connection closed before the reply (not an OSError):
        # the server died or dropped us, after the update may or may not have been applied.
        raise DnsUpdateError(
            f"DNS server {server} closed the connection without answering the update"
        ) from None
    except (OSError, dns.exception.DNSException) as exc:
        raise DnsUpdateError(f"cannot send the DNS update to {server}: {exc}") from None
    rcode = response.rcode()
    if rcode in _PREREQUISITE_RCODES:
        raise PrerequisiteFailed(explain_rcode(rcode, zone, server), rcode)
    if rcode != dns.rcode.NOERROR:
        raise DnsUpdateError(explain_rcode(rcode, zone, server))
    log.debug("update of %s at %s: NOERROR", zone, server)


def apply(server: Server, zone: dns.name.Name, changes: Iterable[Change],
          prerequisites: Iterable[Prerequisite] = ()) -> None:
    send_update(server, build_update(zone, changes, prerequisites, server.key))


def query(server: Server, name: dns.name.Name,
          rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
    """A non-recursive query (RD clear) that must come back authoritative."""
    request = dns.message.make_query(name, rdtype)
    request.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(request, server.address, port=server.port,
                                                  timeout=server.timeout)
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        # EOFError: a truncated reply's TCP retry met a closed connection.
        raise DnsUpdateError(f"cannot query {name} {dns.rdatatype.to_text(rdtype)} at "
                             f"{server}: {exc}") from None
    return response


def find_zone(server: Server, name: dns.name.Name) -> dns.name.Name:
    """The zone that ``name`` belongs to on ``server``: walk up with SOA queries, AA required.

    A NODATA/NXDOMAIN answer names its zone in the authority section's SOA, which usually
    settles it in one query.
    """
    candidate = name
    while True:
        response = query(server, candidate, dns.rdatatype.SOA)
        if response.flags & dns.flags.AA and response.rcode() in (dns.rcode.NOERROR,
                                                                   dns.rcode.NXDOMAIN):
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.SOA and rrset.name == candidate:
                    return candidate
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name
        if candidate == dns.name.root or len(candidate) <= 2:  # never settle on a TLD
            raise DnsUpdateError(
                f"DNS server {server} is not authoritative for any zone above "
                f"{name.to_text(omit_final_dot=True)}; set challenge.dns.zone"
            )
        candidate = candidate.parent()


def current_rrset(server: Server, name: dns.name.Name,
                  rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
    """The rrset the authoritative server answers now (empty on NXDOMAIN/NODATA)."""
    response = query(server, name, rdtype)
    if not response.flags & dns.flags.AA:
        raise DnsUpdateError(f"DNS server {server} is not authoritative for "
                             f"{name.to_text(omit_final_dot=True)}")
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsUpdateError(f"DNS server {server} answered {dns.rcode.to_text(response.rcode())} "
                             f"for {name.to_text(omit_final_dot=True)} "
                             f"{dns.rdatatype.to_text(rdtype)}")
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
    if rrset is None:
        return dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    return rrset


def current_values(server: Server, name: dns.name.Name,
                   rdtype: dns.rdatatype.RdataType) -> set[str]:
    """The values the authoritative server answers now (empty on NXDOMAIN/NODATA)."""
    return {rdata.to_text() for rdata in current_rrset(server, name, rdtype)}


def wait_for(server: Server, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
             values: set[str], present: bool, timeout: float) -> float:
    """Poll until the server answers all ``values`` (or none of them, if not ``present``).

    An inline-signing BIND serves a change some milliseconds after acknowledging the update,
    so the first check comes after 5 ms and the pace slows to 0.5 s. Returns seconds waited.
    """
    start = time.monotonic()
    delay = 0.005
    while True:
        seen = current_values(server, name, rdtype)
        if (values <= seen) if present else not (values & seen):
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            state = "answer" if present else "stop answering"
            raise DnsUpdateError(
                f"DNS server {server} did not {state} {name.to_text(omit_final_dot=True)} "
                f"{dns.rdatatype.to_text(rdtype)} within {timeout:g} s after the update "
                "(propagation_timeout)"
            )
        time.sleep(min(delay, timeout - elapsed))
        delay = min(delay * 2, 0.5)
