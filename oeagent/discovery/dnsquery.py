"""Asking the validating resolver, and saying precisely what its answer proves.

The AD bit is only as trustworthy as the channel it came over (RFC 4035 §4.9.3): oeagent
believes it from a resolver on loopback, or from one the operator explicitly marked trusted,
and otherwise treats every answer as insecure. A SERVFAIL is bogus only when the resolver
says why with a DNSSEC Extended DNS Error; a timeout is unreachable. Neither is ever "none".
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# EDE codes (RFC 8914) that mean "DNSSEC validation failed", as opposed to a server problem.
_DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12}
# EDE codes that mean "could not reach the authoritative servers".
_UNREACHABLE_EDE = {22, 23}


class Security(enum.Enum):
    SECURE = "secure"
    """Validated, and the AD bit came from a resolver we trust."""
    INSECURE = "insecure"
    """Answered, but unsigned or from a resolver whose AD bit we cannot believe."""
    BOGUS = "bogus"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Resolver:
    address: str
    port: int = 53
    timeout: float = 3.0
    trusted: bool = False
    """Trust the AD bit even though the resolver is not on loopback."""

    @property
    def ad_trusted(self) -> bool:
        return self.trusted or ipaddress.ip_address(self.address).is_loopback


@dataclass(frozen=True)
class Answer:
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    security: Security
    rrset: dns.rrset.RRset | None
    """The answer RRset for (name, rdtype) after CNAMEs; None for NXDOMAIN/NODATA/failures."""
    nxdomain: bool = False
    reason: str = ""

    @property
    def ttl(self) -> int:
        return self.rrset.ttl if self.rrset is not None else 0

    @property
    def empty(self) -> bool:
        return self.rrset is None


def query(resolver: Resolver, name: dns.name.Name | str, rdtype: str) -> Answer:
    """One recursive query with DO and AD set; classify the reply, never raise for DNS trouble."""
    qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
    qtype = dns.rdatatype.from_text(rdtype)
    request = dns.message.make_query(qname, qtype, want_dnssec=True, use_edns=0, payload=1232)
    request.flags |= dns.flags.RD | dns.flags.AD
    try:
        reply, _ = dns.query.udp_with_fallback(
            request, resolver.address, port=resolver.port, timeout=resolver.timeout
        )
    except (dns.exception.Timeout, OSError, EOFError) as exc:  # EOF: TCP retry cut off
        why = "timed out" if isinstance(exc, dns.exception.Timeout) else str(exc)
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{rdtype} {qname}: resolver {why}")
    except dns.exception.DNSException as exc:
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{rdtype} {qname}: unusable reply ({exc})")
    return classify(reply, qname, qtype, resolver.ad_trusted)


def classify(
    reply: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType,
    ad_trusted: bool,
) -> Answer:
    rcode = reply.rcode()
    label = f"{dns.rdatatype.to_text(qtype)} {qname}"
    if rcode == dns.rcode.SERVFAIL:
        errors = reply.extended_errors()
        codes = {int(e.code) for e in errors}
        text = "; ".join(f"EDE {int(e.code)} {e.text or ''}".strip() for e in errors)
        if codes & _DNSSEC_EDE:
            return Answer(qname, qtype, Security.BOGUS, None,
                          reason=f"{label}: DNSSEC validation failed ({text})")
        detail = f" ({text})" if text else " without an Extended DNS Error"
        # A SERVFAIL that does not say it is a validation failure is not proof of an attack;
        # it is a failure to get an answer.
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{label}: SERVFAIL{detail}")
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{label}: {dns.rcode.to_text(rcode)}")
    secure = ad_trusted and bool(reply.flags & dns.flags.AD)
    security = Security.SECURE if secure else Security.INSECURE
    if rcode == dns.rcode.NXDOMAIN:
        return Answer(qname, qtype, security, None, nxdomain=True, reason=f"{label}: NXDOMAIN")
    target = qname
    chain = {qname}
    for _ in range(8):  # follow CNAMEs inside the answer, as a stub resolver does
        rrset = reply.get_rrset(reply.answer, target, dns.rdataclass.IN, qtype)
        if rrset is not None:
            return Answer(qname, qtype, security, rrset)
        cname = reply.get_rrset(reply.answer, target, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            break
        target = cname[0].target
        chain.add(target)
    else:
        return Answer(qname, qtype, security, None,
                      reason=f"{label}: CNAME chain of 8 or more (or a loop); not followed")
    return Answer(qname, qtype, security, None,
                  reason=f"{label}: no such record{_ignored(reply, chain, qname)}")


def _ignored(reply: dns.message.Message, chain: set[dns.name.Name], qname: dns.name.Name
             ) -> str:
    """Say which answer RRsets were passed over: records for other names are never read as
    the queried name's, but the reason should show they were there."""
    other = [r for r in reply.answer
             if r.name not in chain and r.rdtype != dns.rdatatype.RRSIG]
    if not other:
        return ""
    shown = ", ".join(f"{dns.rdatatype.to_text(r.rdtype)} {r.name}" for r in other[:3])
    more = f" and {len(other) - 3} more" if len(other) > 3 else ""
    return f"; ignored {shown}{more} (not on the CNAME chain from {qname})"
