"""One peer's record in ``STATE/peers.json``: the decision in effect (``Decision``), the
last lookup (``Entry``), when to look again (``Timing``), and reading it back strictly.

When a peer is looked up again (``Timing``): a held advertisement from ``held_until -
margin`` on, the margin a quarter of its lifetime (at least ``min_margin``, at most half the
lifetime and at most an hour), then, while lookups fail, up to three tries in all, evenly
spaced (at least ``MIN_INTERVAL``) so that the next one falls on the expiry; other peers
after ``retry_failed`` or ``retry_none``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oeagent.advertisement import Advertisement
from oeagent.discovery.claims import BEFORE_RECORDS, Claim
from oeagent.state import read_time

NULL_KEY: tuple[Any, ...] = ("clear-or-null",)
MIN_INTERVAL = dt.timedelta(seconds=30)
"""The shortest time between two lookups of one peer (and between two agent refreshes)."""
MAX_MARGIN = dt.timedelta(hours=1)

InstalledKey = list[Any]
"""A ``Decision.key()`` as JSON holds it (tuples become lists), so it compares after a load."""


def installed_form(key: tuple[Any, ...]) -> InstalledKey:
    result: InstalledKey = json.loads(json.dumps(key))
    return result


@dataclass(frozen=True)
class Timing:
    """When peers are looked up again; ``due`` and ``next_due`` both use it, so the agent
    wakes up exactly when a peer becomes due."""

    retry_failed: dt.timedelta
    """After a failed lookup (bogus, unreachable, invalid): discovery.min_cache."""
    retry_none: dt.timedelta
    """A peer that publishes nothing: discovery.max_cache, so a long peer list stays cheap."""
    min_margin: dt.timedelta = dt.timedelta(0)
    """Room before expiry for a few slow lookups (the caller derives it from the timeouts)."""

    def margin(self, lifetime: dt.timedelta) -> dt.timedelta:
        return min(max(lifetime / 4, self.min_margin), lifetime / 2, MAX_MARGIN)

    def retry_held(self, margin: dt.timedelta) -> dt.timedelta:
        """Between attempts inside the margin: up to three tries, evenly spaced and at least
        MIN_INTERVAL apart, the last one spacing before the expiry, so the run after it
        falls on the expiry itself (and releases the peer if every try failed)."""
        return margin / max(1, min(3, margin // MIN_INTERVAL))


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
        assert self.advertisement is not None
        return [Claim(self.fqdn, a, self.source, self.since.get(a, BEFORE_RECORDS),
                      self.advertisement.mode) for a in self.addresses]

    def key(self) -> tuple[Any, ...]:
        """What the generated policy depends on; a change here means re-apply the policy."""
        if not self.authenticated:
            return NULL_KEY
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
    obtained_at: dt.datetime | None = None
    """When the decision's advertisement was obtained (its lifetime runs from here to
    held_until); a held entry keeps it while checked_at moves on with every failed lookup."""

    def held_advertisement(self, now: dt.datetime) -> bool:
        """An authenticated decision that has not expired at ``now``."""
        d = self.decision
        return d.authenticated and d.held_until is not None and now < d.held_until

    def refresh_window(self, timing: Timing) -> tuple[dt.datetime, dt.timedelta]:
        """(when to look up again, the spacing of retries after that) for a held entry."""
        until = self.decision.held_until
        assert until is not None
        margin = timing.margin(until - (self.obtained_at or self.checked_at))
        return until - margin, timing.retry_held(margin)

    def next_lookup(self, timing: Timing) -> dt.datetime:
        """When this peer is due for a lookup."""
        if self.held_advertisement(self.checked_at):
            start, spacing = self.refresh_window(timing)
            if self.checked_at < start:
                return start
            return self.checked_at + spacing  # tried in the window and failed: retry
        retry = timing.retry_none if self.last_status == "none" else timing.retry_failed
        return self.checked_at + retry

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
            "obtained_at": self.obtained_at.isoformat() if self.obtained_at else None,
        }

    @classmethod
    def from_json(cls, raw: object) -> Entry:
        """The entry ``to_json`` wrote; ValueError saying which field is not what it wrote
        (a wrong type here would only fail later, deep inside the policy)."""
        if not isinstance(raw, dict):
            raise ValueError("the entry is not a JSON object")
        ad_raw = raw.get("advertisement")
        ad = _advertisement(ad_raw) if ad_raw else None
        addresses = _strings(raw.get("addresses", []), "addresses")
        since_raw = raw.get("since") or {}
        if not isinstance(since_raw, dict):
            raise ValueError("since is not a JSON object")
        # Files written before claims were dated: their claims count as the oldest.
        since = {a: _time(t, f"since[{a!r}]") for a, t in since_raw.items()}
        decision = Decision(_text(raw, "peer"), optional_text(raw, "fqdn"), ad,
                            _optional_time(raw.get("held_until"), "held_until"),
                            addresses, optional_text(raw, "source") or "",
                            {a: since.get(a, BEFORE_RECORDS) for a in addresses} if ad else {})
        return cls(decision, _text(raw, "last_status"), _time(raw.get("checked_at"), "checked_at"),
                   _strings(raw.get("reasons", []), "reasons"), bool(raw.get("held")),
                   _optional_time(raw.get("obtained_at"), "obtained_at"))


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is {'not a string' if key in raw else 'missing'}")
    return value


def optional_text(raw: dict[str, Any], key: str) -> str | None:
    return None if raw.get(key) is None else _text(raw, key)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} is not a list of strings")
    return tuple(value)


def _time(value: object, what: str) -> dt.datetime:
    when = read_time(value)
    if when is None:
        raise ValueError(f"{what} is not a time with a zone")
    return when


def _optional_time(value: object, what: str) -> dt.datetime | None:
    return None if value is None else _time(value, what)


def _advertisement(raw: object) -> Advertisement:
    if not isinstance(raw, dict):
        raise ValueError("advertisement is not a JSON object")
    ports = raw.get("ike_ports")
    if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in ports):
        raise ValueError("advertisement.ike_ports is not a list of port numbers")
    max_age = raw.get("max_age")
    if not isinstance(max_age, int) or isinstance(max_age, bool):
        raise ValueError("advertisement.max_age is not a number")
    for key in ("fqdn", "auth", "mode"):
        _text(raw, key)
    try:
        return Advertisement(**{**raw, "pins": _strings(raw.get("pins"), "advertisement.pins"),
                                "addresses": _strings(raw.get("addresses"),
                                                      "advertisement.addresses"),
                                "ike_ports": tuple(ports)})
    except TypeError as exc:  # a key Advertisement does not have
        raise ValueError(f"advertisement: {exc}") from None


def read_entries(raw: object) -> dict[str, Entry]:
    if not isinstance(raw, dict):
        raise ValueError("peers is not a JSON object")
    entries = {}
    for peer, entry in raw.items():
        try:
            entries[peer] = Entry.from_json(entry)
        except ValueError as exc:
            raise ValueError(f"peer {peer!r}: {exc}") from None
    return entries
