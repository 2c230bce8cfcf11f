"""Asking the local validating resolver, as a client would, and trusting only its AD bit.

The AD bit is only as trustworthy as the path to the resolver (RFC 4035 §4.9.3), so the
configured resolver must be on loopback (config refuses anything else). Verification polls
with a growing interval up to a bound, instead of sleeping a fixed time: caches in between
may still hold the old answer for up to its TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype


@dataclass(frozen=True)
class Resolver:
    address: str = "127.0.0.1"
    port: int = 53
    timeout: float = 3.0


@dataclass(frozen=True)
class Answer:
    rcode: str
    secure: bool
    """The resolver set AD: it validated the answer (or the denial) with DNSSEC."""
    values: frozenset[str]

    def describe(self) -> str:
        security = "AD" if self.secure else "no AD"
        return f"{self.rcode}, {security}, {len(self.values)} record(s)"


def lookup(resolver: Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Answer:
    """One recursive query with DO and AD set; network failures become rcode ``UNREACHABLE``."""
    request = dns.message.make_query(name, rdtype, want_dnssec=True)
    request.flags |= dns.flags.RD | dns.flags.AD
    try:
        response, _ = dns.query.udp_with_fallback(request, resolver.address, port=resolver.port,
                                                  timeout=resolver.timeout)
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        return Answer(f"UNREACHABLE ({type(exc).__name__})", False, frozenset())
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
    values = frozenset(r.to_text() for r in rrset) if rrset is not None else frozenset()
    return Answer(dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AD),
                  values)


def addresses(resolver: Resolver, fqdn: str) -> list[str]:
    """The A and AAAA addresses of ``fqdn`` through the resolver (security not required:
    the HTTPS document is for zones without DNSSEC, and TLS authenticates the server)."""
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        found += sorted(lookup(resolver, dns.name.from_text(fqdn), rdtype).values)
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
