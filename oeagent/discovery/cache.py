"""What oeagent holds each peer to, persisted in ``STATE/peers.json``: MTA-STS semantics.

A valid advertisement is held until it expires (HTTPS: max_age and the document's expiry;
DNS: the TTL, bounded by discovery.min_cache/max_cache). While an enforce or testing
advertisement is held, a lookup that finds nothing, something broken, a bogus answer or no
answer at all does NOT release the peer: an attacker who can block DNS or HTTPS must not be
able to downgrade it. Only a validly published ``mode=none`` or the expiry releases it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oeagent.advertisement import Advertisement
from oeagent.discovery.claims import BEFORE_RECORDS, Claim
from oeagent.discovery.lookup import Result
from oeagent.state import StateDir

FILE = "peers.json"
VERSION = 1


@dataclass(frozen=True)
class Decision:
    """What the policy does for one peer: authenticated OE (with what) or nothing special."""

    peer: str
    fqdn: str | None
    advertisement: Advertisement | None
    held_until: dt.datetime | None
    addresses: tuple[str, ...]
    source: str = ""
    """``dns`` or ``https``: the proof behind the advertisement (empty before it was kept)."""
    since: Mapping[str, dt.datetime] = field(default_factory=dict, compare=False)
    """Address -> when this peer was first recorded claiming it (``oeagent.discovery.claims``:
    an older claim keeps a contested address)."""

    @property
    def authenticated(self) -> bool:
        return self.advertisement is not None and self.advertisement.mode != "none"

    def claims(self) -> list[Claim]:
        """The addresses this decision would give a per-peer conn, with proof and age."""
        if not self.authenticated or self.fqdn is None:
            return []
        return [Claim(self.fqdn, a, self.source, self.since.get(a, BEFORE_RECORDS))
                for a in self.addresses]

    def key(self) -> tuple[Any, ...]:
        """What the generated policy depends on; a change here means re-apply the policy."""
        if not self.authenticated:
            return ("clear-or-null",)
        ad = self.advertisement
        assert ad is not None
        # The source decides contested addresses (oeagent.discovery.claims).
        return (self.fqdn, ad.mode, ad.auth, ad.pins, self.addresses, self.source)


@dataclass(frozen=True)
class Entry:
    decision: Decision
    last_status: str
    checked_at: dt.datetime
    reasons: tuple[str, ...]
    held: bool
    """True when this decision comes from the cache despite a failed or empty lookup."""

    def effective(self, now: dt.datetime) -> Decision:
        d = self.decision
        if d.held_until is not None and d.held_until <= now:
            return Decision(d.peer, d.fqdn, None, None, d.addresses)
        return d

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        ad = d.advertisement
        return {
            "peer": d.peer, "fqdn": d.fqdn, "addresses": list(d.addresses),
            "advertisement": {**ad.__dict__, "pins": list(ad.pins),
                              "addresses": list(ad.addresses),
                              "ike_ports": list(ad.ike_ports)} if ad else None,
            "held_until": d.held_until.isoformat() if d.held_until else None,
            "source": d.source or None,
            "since": {a: t.isoformat() for a, t in d.since.items()},
            "last_status": self.last_status, "checked_at": self.checked_at.isoformat(),
            "reasons": list(self.reasons), "held": self.held,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Entry:
        ad_raw = raw.get("advertisement")
        ad = None
        if ad_raw:
            ad = Advertisement(**{**ad_raw, "pins": tuple(ad_raw["pins"]),
                                  "addresses": tuple(ad_raw["addresses"]),
                                  "ike_ports": tuple(ad_raw["ike_ports"])})
        held_until = raw.get("held_until")
        addresses = tuple(raw.get("addresses", ()))
        # Files written before claims were dated: their claims count as the oldest.
        since = {a: dt.datetime.fromisoformat(t) for a, t in (raw.get("since") or {}).items()}
        decision = Decision(raw["peer"], raw.get("fqdn"), ad,
                            dt.datetime.fromisoformat(held_until) if held_until else None,
                            addresses, raw.get("source") or "",
                            {a: since.get(a, BEFORE_RECORDS) for a in addresses} if ad else {})
        return cls(decision, raw["last_status"], dt.datetime.fromisoformat(raw["checked_at"]),
                   tuple(raw.get("reasons", ())), bool(raw.get("held")))


def merge(old: Entry | None, result: Result, now: dt.datetime) -> Entry:
    """The new entry for a peer after ``result``; the heart of no-downgrade."""
    reasons = tuple(result.reasons)
    if result.status == "authenticated" or result.released:
        decision = Decision(result.peer, result.fqdn, result.advertisement, result.expires,
                            result.addresses, result.source, _since(old, result, now))
        return Entry(decision, result.status, now, reasons, held=False)
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated:
            note = f"kept the {kept.advertisement.mode} advertisement until "  # type: ignore[union-attr]
            note += f"{kept.held_until.isoformat() if kept.held_until else '?'}"
            return Entry(kept, result.status, now, (*reasons, note), held=True)
    decision = Decision(result.peer, result.fqdn, None, None, result.addresses)
    return Entry(decision, result.status, now, reasons, held=False)


def _since(old: Entry | None, result: Result, now: dt.datetime) -> dict[str, dt.datetime]:
    """A claim keeps its first date while the peer keeps claiming the address under the same
    name; a new address, or one claimed again after a release or expiry, starts now."""
    if result.released:
        return {}
    before: Mapping[str, dt.datetime] = {}
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated and kept.fqdn == result.fqdn:
            before = kept.since
    return {a: before.get(a, now) for a in result.addresses}


class PeerCache:
    """Load, update and save ``STATE/peers.json`` (callers hold the state lock)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.path = state.root / FILE
        raw = state.read_json(self.path) or {"version": VERSION, "peers": {}}
        self.entries: dict[str, Entry] = {
            peer: Entry.from_json(entry) for peer, entry in raw.get("peers", {}).items()
        }

    def update(self, result: Result, now: dt.datetime) -> tuple[Entry, bool]:
        """Merge ``result``; return the new entry and whether the policy must change."""
        old = self.entries.get(result.peer)
        new = merge(old, result, now)
        before = old.effective(now).key() if old else ("clear-or-null",)
        self.entries[result.peer] = new
        return new, new.effective(now).key() != before

    def decisions(self, now: dt.datetime) -> list[Decision]:
        return [e.effective(now) for _, e in sorted(self.entries.items())]

    def due(self, now: dt.datetime, retry_failed: dt.timedelta, retry_none: dt.timedelta
            ) -> list[str]:
        """Peers to look up again: a held advertisement in its last quarter (at most its last
        hour); a failed lookup (bogus, unreachable, invalid) after ``retry_failed``; a peer
        that publishes nothing only after ``retry_none``, so a long peer list stays cheap."""
        out = []
        for peer, entry in self.entries.items():
            until = entry.decision.held_until
            if until is not None and entry.decision.authenticated:
                margin = min((until - entry.checked_at) / 4, dt.timedelta(hours=1))
                if until - now <= margin:
                    out.append(peer)
                continue
            retry = retry_none if entry.last_status == "none" else retry_failed
            if now - entry.checked_at >= retry:
                out.append(peer)
        return sorted(out)

    def save(self) -> None:
        self.state.write_json(self.path, {
            "version": VERSION,
            "peers": {peer: e.to_json() for peer, e in sorted(self.entries.items())},
        })
