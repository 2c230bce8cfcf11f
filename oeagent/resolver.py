"""Asking the validating resolver, and saying precisely what its answer proves.

The one DNS client of discovery (``discover``, the policy's exception lookups) and of
publishing (``publish --verify``): the same query (RD, DO and AD set), the same rules.
The AD bit is only as trustworthy as the channel it came over (RFC 4035 §4.9.3): oeagent
believes it from a resolver on loopback, or from one the operator explicitly marked trusted,
and otherwise treats every answer as insecure. A SERVFAIL is bogus only when the resolver
says why with a DNSSEC Extended DNS Error; a timeout is unreachable. Neither is ever "none".
Publishing polls (``poll``) with a growing interval up to a bound instead of sleeping a fixed
time: caches in between may still hold the old answer for up to its TTL.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from oeagent import dnswire
from oeagent.dnswire import MalformedReply, Reply

__all__ = ["Answer", "MalformedReply", "Reply", "Resolver", "Security", "classify", "query"]

# EDE codes (RFC 8914) that mean "DNSSEC validation failed", as opposed to a server problem;
# any other SERVFAIL (EDE 22/23 "no reachable authority" included) is unreachable.
_DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12}


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

    @functools.cached_property  # asked once per query: parse the address once
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
    rcode: str = ""
    """The reply's rcode (``NOERROR``, ``SERVFAIL``...); empty when no usable reply came."""

    @property
    def ttl(self) -> int:
        return self.rrset.ttl if self.rrset is not None else 0

    @property
    def empty(self) -> bool:
        return self.rrset is None

    @property
    def secure(self) -> bool:
        return self.security is Security.SECURE

    @property
    def values(self) -> frozenset[str]:
        """The records' data in presentation form (what publishing compares)."""
        return frozenset(r.to_text() for r in self.rrset) if self.rrset is not None else frozenset()

    def describe(self) -> str:
        """``NOERROR, AD, 2 record(s)``; a failure says why."""
        why = f" ({self.reason})" if self.security in (Security.BOGUS, Security.UNREACHABLE) \
            else ""
        return (f"{self.rcode or 'UNREACHABLE'}, {'AD' if self.secure else 'no AD'}, "
                f"{len(self.values)} record(s){why}")


# RdataType.make parses a type's text through an enum lookup each time; discovery asks the
# same few types for every peer.
_QTYPES = {t: dns.rdatatype.RdataType.make(t)
           for t in ("A", "AAAA", "TXT", "TLSA", "IPSECKEY", "PTR")}


def query(resolver: Resolver, name: dns.name.Name | str,
          rdtype: str | dns.rdatatype.RdataType) -> Answer:
    """One recursive query with DO and AD set; classify the reply, never raise for DNS trouble."""
    qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
    qtype = _QTYPES.get(rdtype) if isinstance(rdtype, str) else None
    if qtype is None:
        qtype = dns.rdatatype.RdataType.make(rdtype)
    try:
        reply = exchange(resolver, qname, qtype)
    except (dns.exception.Timeout, OSError, EOFError) as exc:  # EOF: TCP retry cut off
        if isinstance(exc, dns.exception.Timeout):
            why = "timed out"
        else:  # TimeoutError's text says what else came, if anything
            why = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else repr(exc))
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{dns.rdatatype.to_text(qtype)} {qname}: resolver {why}")
    except (dns.exception.DNSException, MalformedReply) as exc:
        return Answer(qname, qtype, Security.UNREACHABLE, None,
                      reason=f"{dns.rdatatype.to_text(qtype)} {qname}: unusable reply ({exc})")
    return classify(reply, qname, qtype, resolver.ad_trusted)


_MAX_REPLY = 65535


def exchange(resolver: Resolver, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
             ) -> Reply:
    """Ask over UDP (TCP when the reply is truncated).

    Raises OSError (TimeoutError when no reply came in time), MalformedReply, or dnspython's
    DNSException (its parser's errors, and TCP's Timeout).

    A new socket per query, as dnspython does: a fresh random source port plus a random ID
    is what an off-path spoofer has to guess. Datagrams from another address or port, or
    that do not answer this question, are ignored until the timeout.
    """
    question = dnswire.question_wire(qname, qtype)
    wire = dnswire.request_wire(question, int.from_bytes(os.urandom(2), "big"))
    destination = (resolver.address, resolver.port)
    family = socket.AF_INET6 if ":" in resolver.address else socket.AF_INET
    deadline = time.monotonic() + resolver.timeout
    other_questions = 0  # replies with our ID that answer something else: said on timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(wire, destination)
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                data, source = sock.recvfrom(_MAX_REPLY)
            except TimeoutError:
                if other_questions:
                    raise TimeoutError(
                        f"timed out; it answered another question {other_questions} "
                        f"time(s), which was ignored") from None
                raise
            if (not _same_endpoint(source, destination) or len(data) < 12
                    or data[:2] != wire[:2] or not data[2] & 0x80):
                continue  # not a reply to this query
            reply = dnswire.parse_reply(data, question, qname)
            if reply is not None:
                break
            other_questions += 1
    return _over_tcp(resolver, qname, qtype) if dnswire.truncated(reply) else reply


def _over_tcp(resolver: Resolver, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
              ) -> Reply:
    import dns.message  # only for this rare case: ~30 ms of everyone's start-up otherwise
    import dns.query

    request = dns.message.make_query(qname, qtype, want_dnssec=True, payload=1232)
    request.flags |= dns.flags.RD | dns.flags.AD
    return Reply.from_message(dns.query.tcp(request, resolver.address,
                                            timeout=resolver.timeout, port=resolver.port))


def _same_endpoint(source: tuple[str, int] | tuple[str, int, int, int],
                   destination: tuple[str, int]) -> bool:
    if source[1] != destination[1]:
        return False
    # The kernel reports the address in canonical form; the configured one may not be.
    return (source[0] == destination[0]
            or ipaddress.ip_address(source[0]) == ipaddress.ip_address(destination[0]))


def classify(reply: Reply, qname: dns.name.Name, qtype: dns.rdatatype.RdataType,
             ad_trusted: bool) -> Answer:
    rcode = reply.rcode
    text = rcode.name  # what dns.rcode.to_text says, or the number for one without a name
    # Only a reason needs the label: every query asked and answered would pay for the text.
    label = _Label(qname, qtype)
    if rcode == dns.rcode.SERVFAIL:
        codes = {code for code, _ in reply.extended_errors}
        ede = "; ".join(f"EDE {code} {why}".strip() for code, why in reply.extended_errors)
        if codes & _DNSSEC_EDE:
            return Answer(qname, qtype, Security.BOGUS, None, rcode=text,
                          reason=f"{label}: DNSSEC validation failed ({ede})")
        detail = f" ({ede})" if ede else " without an Extended DNS Error"
        # A SERVFAIL that does not say it is a validation failure is not proof of an attack;
        # it is a failure to get an answer.
        return Answer(qname, qtype, Security.UNREACHABLE, None, rcode=text,
                      reason=f"{label}: SERVFAIL{detail}")
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Answer(qname, qtype, Security.UNREACHABLE, None, rcode=text,
                      reason=f"{label}: {text}")
    secure = ad_trusted and bool(reply.flags & dns.flags.AD)
    security = Security.SECURE if secure else Security.INSECURE
    if rcode == dns.rcode.NXDOMAIN:
        return Answer(qname, qtype, security, None, nxdomain=True, rcode=text,
                      reason=f"{label}: NXDOMAIN")
    target = qname
    chain = {qname}
    for _ in range(8):  # follow CNAMEs inside the answer, as a stub resolver does
        rrset = reply.find(target, qtype)
        if rrset is not None:
            return Answer(qname, qtype, security, rrset, rcode=text)
        cname = reply.find(target, dns.rdatatype.CNAME)
        if cname is None:
            break
        target = cname[0].target
        chain.add(target)
    else:
        return Answer(qname, qtype, security, None, rcode=text,
                      reason=f"{label}: CNAME chain of 8 or more (or a loop); not followed")
    return Answer(qname, qtype, security, None, rcode=text,
                  reason=f"{label}: no such record{_ignored(reply, chain, qname)}")


@dataclass(frozen=True, slots=True)
class _Label:
    """``TXT _oe.peer.example.``, made into text only when a reason says it."""

    qname: dns.name.Name
    qtype: dns.rdatatype.RdataType

    def __str__(self) -> str:
        return f"{dns.rdatatype.to_text(self.qtype)} {self.qname}"


def _ignored(reply: Reply, chain: set[dns.name.Name], qname: dns.name.Name) -> str:
    """Say which answer RRsets were passed over: records for other names are never read as
    the queried name's, but the reason should show they were there."""
    other = [r for r in reply.answer if r.name not in chain]
    if not other:
        return ""
    shown = ", ".join(f"{dns.rdatatype.to_text(r.rdtype)} {r.name}" for r in other[:3])
    more = f" and {len(other) - 3} more" if len(other) > 3 else ""
    return f"; ignored {shown}{more} (not on the CNAME chain from {qname})"


def addresses(resolver: Resolver, fqdn: str) -> list[str]:
    """The A and AAAA addresses of ``fqdn`` through the resolver (security not required:
    the HTTPS document is for zones without DNSSEC, and TLS authenticates the server)."""
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        found += sorted(query(resolver, dns.name.from_text(fqdn), rdtype).values)
    return found


def poll(check: Callable[[], bool], timeout: float) -> float:
    """Call ``check`` until it returns True or ``timeout`` passes; the seconds waited, or -1."""
    start = time.monotonic()
    delay = 0.05
    while True:
        if check():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            return -1.0
        time.sleep(min(delay, timeout - elapsed))
        delay = min(delay * 2, 1.0)
