"""The in-process validator's verdict on one RRset, and how a failed RRSIG is explained.

Both halves of the validator produce these: ``validate`` (judging the RRsets of one reply) and
``zonekeys`` (the chain of trust from an anchor down to a zone's DNSKEY RRset), and each hands
the other's verdicts straight back to its caller. The type lives here, apart from both, so that
neither has to import the other to speak it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dns.rrset

from oeagent.discovery.nsec import Proof
from oeagent.resolver import Answer, Security


@dataclass
class Judged:
    security: Security
    reason: str = ""
    answer: Answer | None = None
    proof: Proof | None = None
    """What a validated denial proved."""
    keys: dns.rrset.RRset | None = None
    not_a_zone: bool = False
    """A validated denial says this name has no DS and is no delegation point."""


def time_problem(sigs: dns.rrset.RRset, now: float) -> str:
    """Why the RRSIGs fail on time alone (all of them expired / not yet valid), or ""."""
    # dnspython's ValidationFailure only says "no RRSIGs validated"; a clock or a stale
    # signer is the likeliest cause in the field, so name the date when it is the cause.
    def at(t: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    if all(s.expiration < now for s in sigs):
        return f"RRSIG expired at {at(max(s.expiration for s in sigs))}"
    if all(s.inception > now for s in sigs):
        return f"RRSIG not valid before {at(min(s.inception for s in sigs))}"
    return ""
