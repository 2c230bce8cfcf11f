"""Which peer name an address belongs to when two or more authenticated names claim it.

A per-peer conn says "traffic to ADDR must authenticate as @name, or be dropped". Two names
claiming one address would make every packet to it fail one of the two conns, so a name
could cut this host off from an address it does not own (point its own A record at a bank's
address). Each address therefore gets at most one name, chosen by, in order:

1. the operator's word: ``policy.peers`` over anything discovered;
2. the promise: ``enforce`` over ``testing``. A testing conn passes traffic in clear when the
   peer fails to authenticate, so a testing claim winning an address that another name
   promised to protect would turn that promise into cleartext: a name with a signed zone
   pointing its A record at an HTTPS-advertised enforce peer would do just that. The other
   way round costs at most the denial of service any winning impostor causes;
3. proof: DNSSEC-signed records over an HTTPS document (whose addresses rest on unsigned DNS);
4. age: the claim the peer cache recorded first keeps the address, so a name added later
   cannot take it over from an equal;
5. the name, alphabetically, when neither claim is stronger or older (both first seen in the
   same run): arbitrary but stable, and reported as such.

The losers get no conn for that address (NULL OE or clear, as for any other host); the
winner is never changed. Pure functions: the policy builds its conns from ``resolve`` and
``discover`` reports the same conflicts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from oeagent.names import address_order

# Claims recorded before oeagent kept their age count as the oldest (they were held first).
BEFORE_RECORDS = dt.datetime.min.replace(tzinfo=dt.UTC)
_STRENGTH = {"config": 3, "dns": 2, "https": 1}
_PROOF = {"config": "policy.peers", "dns": "DNSSEC", "https": "HTTPS"}


@dataclass(frozen=True)
class Claim:
    name: str
    address: str
    source: str
    """``config``, ``dns`` or ``https``; anything else (an older cache) ranks as HTTPS."""
    since: dt.datetime
    """When the peer cache first recorded this name with this address."""
    mode: str = "enforce"
    """``enforce`` or ``testing``: what the name promised for its conn."""

    @property
    def strength(self) -> int:
        return _STRENGTH.get(self.source, 1)

    @property
    def operator(self) -> bool:
        return self.source == "config"

    @property
    def enforced(self) -> bool:
        return self.mode != "testing"  # anything but an explicit testing counts as a promise

    def order(self) -> tuple[bool, bool, int, dt.datetime, str]:
        return (not self.operator, not self.enforced, -self.strength, self.since, self.name)

    def describe(self) -> str:
        proof = _PROOF.get(self.source, "unknown proof")
        since = "" if self.since == BEFORE_RECORDS else f" since {self.since.isoformat()}"
        return f"{self.name} ({proof}{since})"


@dataclass(frozen=True)
class Conflict:
    address: str
    kept: Claim
    lost: tuple[Claim, ...]

    @property
    def why(self) -> str:
        runner_up = self.lost[0]
        if self.kept.operator != runner_up.operator:
            return "the operator's word (policy.peers)"
        if self.kept.enforced != runner_up.enforced:
            return "enforce over testing"
        if self.kept.strength != runner_up.strength:
            return "stronger proof"
        if self.kept.since != runner_up.since:
            return "claimed first"
        return "a tie (same proof, first seen together): kept by name order"

    def text(self) -> str:
        lost = ", ".join(c.describe() for c in self.lost)
        others = ", ".join(c.name for c in self.lost)
        return (f"{self.address} is claimed by {self.kept.name} and {others}: kept by "
                f"{self.kept.describe()}, {self.why}; no conn for {lost}")

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "kept": self.kept.name,
                "lost": [c.name for c in self.lost], "why": self.why}


def resolve(claims: Iterable[Claim]) -> tuple[dict[str, Claim], list[Conflict]]:
    """The winning claim per address (canonical text) and the conflicts, by address."""
    by_address: dict[str, dict[str, Claim]] = {}
    for claim in claims:
        address = str(ipaddress.ip_address(claim.address))
        names = by_address.setdefault(address, {})
        best = names.get(claim.name)
        # One name claiming an address twice (config and discovery) is no conflict: its
        # strongest claim stands for it.
        if best is None or claim.order() < best.order():
            names[claim.name] = claim
    winners: dict[str, Claim] = {}
    conflicts: list[Conflict] = []
    for address in sorted(by_address, key=address_order):
        ranked = sorted(by_address[address].values(), key=Claim.order)
        winners[address] = ranked[0]
        if len(ranked) > 1:
            conflicts.append(Conflict(address, ranked[0], tuple(ranked[1:])))
    return winners, conflicts
