"""What oeagent holds each peer to, persisted in ``STATE/peers.json``: MTA-STS semantics.

A valid advertisement is held until it expires (HTTPS: max_age and the document's expiry;
DNS: the TTL, bounded by discovery.min_cache/max_cache). While an enforce or testing
advertisement is held, a lookup that finds nothing, something broken, a bogus answer or no
answer at all does NOT release the peer: an attacker who can block DNS or HTTPS must not be
able to downgrade it. Only a validly published ``mode=none`` or the expiry releases it.

The file also records, per peer, the decision the installed policy was rendered from
(``installed``): a change is a difference between that and the decision in effect now, so
an expiry that no lookup noticed, or a one-shot ``oeagent discover``, still re-applies the
policy, and a refresh that finds the same advertisement again does not.

When a peer is looked up again (``Timing``): a held advertisement from ``held_until -
margin`` on, the margin a quarter of its lifetime (at least ``min_margin``, at most half the
lifetime and at most an hour), then, while lookups fail, up to three tries in all, evenly
spaced (at least ``MIN_INTERVAL``) so that the next one falls on the expiry; other peers
after ``retry_failed`` or ``retry_none``. ``next_due`` says when the next of these falls
(or a held advertisement expires), for the agent's schedule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oeagent.advertisement import Advertisement
from oeagent.discovery.claims import BEFORE_RECORDS, Claim
from oeagent.discovery.lookup import Result
from oeagent.errors import StateError
from oeagent.state import StateDir

FILE = "peers.json"
VERSION = 1
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
        decision = Decision(_text(raw, "peer"), _optional_text(raw, "fqdn"), ad,
                            _optional_time(raw.get("held_until"), "held_until"),
                            addresses, _optional_text(raw, "source") or "",
                            {a: since.get(a, BEFORE_RECORDS) for a in addresses} if ad else {})
        return cls(decision, _text(raw, "last_status"), _time(raw.get("checked_at"), "checked_at"),
                   _strings(raw.get("reasons", []), "reasons"), bool(raw.get("held")),
                   _optional_time(raw.get("obtained_at"), "obtained_at"))


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is {'not a string' if key in raw else 'missing'}")
    return value


def _optional_text(raw: dict[str, Any], key: str) -> str | None:
    return None if raw.get(key) is None else _text(raw, key)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} is not a list of strings")
    return tuple(value)


def _time(value: object, what: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
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


def _entries(raw: object) -> dict[str, Entry]:
    if not isinstance(raw, dict):
        raise ValueError("peers is not a JSON object")
    entries = {}
    for peer, entry in raw.items():
        try:
            entries[peer] = Entry.from_json(entry)
        except ValueError as exc:
            raise ValueError(f"peer {peer!r}: {exc}") from None
    return entries


def merge(old: Entry | None, result: Result, now: dt.datetime,
          claims_after: dt.datetime | None = None) -> Entry:
    """The new entry for a peer after ``result``; the heart of no-downgrade.

    ``claims_after``: the newest claim date already recorded (``PeerCache``); a claim first
    made now is dated after it even when the clock says otherwise."""
    reasons = tuple(result.reasons)
    failed, why = _held_back(old, result, now)
    reasons += (why,) if why else ()
    if (result.status == "authenticated" or result.released) and not failed:
        decision = Decision(result.peer, result.fqdn, result.advertisement, result.expires,
                            result.addresses, result.source,
                            _since(old, result, now, claims_after))
        if old is not None:
            decision = _no_earlier(decision, old.effective(now))
        return Entry(decision, result.status, now, reasons, held=False, obtained_at=now)
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated:
            note = f"kept the {kept.advertisement.mode} advertisement until "  # type: ignore[union-attr]
            note += f"{kept.held_until.isoformat() if kept.held_until else '?'}"
            return Entry(kept, failed or result.status, now, (*reasons, note), held=True,
                         obtained_at=old.obtained_at or old.checked_at)
    decision = Decision(result.peer, result.fqdn, None, None, result.addresses)
    return Entry(decision, result.status, now, reasons, held=False)


def _no_earlier(decision: Decision, kept: Decision) -> Decision:
    """``decision`` found again exactly what ``kept`` holds: it keeps the later expiry.

    The earlier answer promised the held one. A new expiry before it comes from a clock set
    back (dated by that clock, it would expire as soon as the clock is right again, on every
    lookup made while it was behind) or a peer that shortened its TTL or max_age without
    changing anything else (it withdraws with ``mode=none``). A different advertisement
    starts its own lifetime."""
    until, held = decision.held_until, kept.held_until
    if (kept.authenticated and kept.key() == decision.key() and until is not None
            and held is not None and held > until):
        return dataclasses.replace(decision, held_until=held)
    return decision


def _held_back(old: Entry | None, result: Result, now: dt.datetime) -> tuple[str, str]:
    """What keeps ``result``, though it found an advertisement, from replacing the one
    ``old`` holds: (the status to record, a reason to add); ("", "") when it may.

    A lookup whose A or AAAA query failed has only some of the name's addresses: replacing
    the held decision with it would take the conn (and the drop) off the others, which is a
    downgrade that whoever can block one query could cause at will. A release (``mode=none``)
    does not depend on the addresses, so it still counts.

    A held DNSSEC-signed advertisement is not replaced (nor released) by an HTTPS document
    found because the DNS lookup failed: the failed answer may still hold it, and a document
    rests on a weaker proof (a certificate for the name; ``oeagent.discovery.claims`` ranks
    it below DNSSEC), so blocking DNS would let whoever can serve one change or release the
    peer. After a validated answer that the name no longer advertises in DNS, the document
    counts.

    A held address that the document still covers (it lists the address, or lists none) and
    that only an unsigned A/AAAA answer left out is no validated change: whoever is on the
    DNS path can forge that answer (pointing the name at a relay to the real server, which
    still delivers the genuine document), and the peer would lose its conn there. The held
    decision stays until it expires; a signed answer, or the document, drops an address at
    once."""
    if old is None:
        return "", ""
    kept = old.effective(now)
    if not kept.authenticated:
        return "", ""
    if result.status == "authenticated" and result.incomplete:
        return result.incomplete, ""
    # An unknown proof (a cache written before it was recorded) may be DNSSEC: held alike.
    if kept.source != "https" and result.source == "https" and result.dns_failure:
        return result.dns_failure, ""
    ad = result.advertisement
    if (result.status == "authenticated" and result.unsigned_families and ad is not None
            and kept.fqdn == result.fqdn):
        gone = [a for a in kept.addresses
                if a not in result.addresses and (not ad.addresses or a in ad.addresses)
                and ipaddress.ip_address(a).version in result.unsigned_families]
        if gone:
            verb = "is" if len(gone) == 1 else "are"
            return result.status, (
                f"{', '.join(gone)} {verb} no longer in {result.fqdn}'s unsigned A/AAAA "
                "records, but the advertisement still covers it: not a validated change")
    return "", ""


def _since(old: Entry | None, result: Result, now: dt.datetime,
           claims_after: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """A claim keeps its first date while the peer keeps claiming the address under the same
    name; a new address, or one claimed again after a release or expiry, starts now -- or,
    when the clock was set back behind ``claims_after`` (the newest claim recorded before),
    just after that: the older claim keeps an address (``oeagent.discovery.claims``), so a
    clock set back must not make a claim made today older than one recorded yesterday."""
    if result.released:
        return {}
    first = now
    if claims_after is not None and now <= claims_after:
        first = claims_after + dt.timedelta(microseconds=1)
    before: Mapping[str, dt.datetime] = {}
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated and kept.fqdn == result.fqdn:
            before = kept.since
    return {a: before.get(a, first) for a in result.addresses}


class PeerCache:
    """Load, update and save ``STATE/peers.json`` (callers hold the state lock)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.path = state.root / FILE
        raw = state.read_json(self.path)
        if raw is None:
            raw = {"version": VERSION, "peers": {}}
        # Refuse a damaged file rather than read it as fewer peers: a cache without its
        # peers would hand every enforce peer to NULL OE at the next refresh. Each field is
        # checked as it is read: a wrong type would only fail later, deep in the policy.
        try:
            if raw.get("version") != VERSION:
                raise ValueError(f"version {raw.get('version')!r}, not {VERSION}")
            if "peers" not in raw:
                raise ValueError("no 'peers'")
            self.entries: dict[str, Entry] = _entries(raw["peers"])
            installed = raw.get("installed", {})
            if not isinstance(installed, dict):
                raise ValueError("installed is not a JSON object")
            self.installed: dict[str, InstalledKey] = dict(installed)
            """Per peer, the decision key the installed policy was rendered from (absent:
            the peer got no conn of its own, as for a clear-or-null decision)."""
            self.installed_policy: str | None = _optional_text(raw, "installed_policy")
            """A digest of the policy file written with those decisions: when the file
            differs, someone else (a one-shot ``oeagent policy``) installed it and the keys
            say nothing."""
        except ValueError as exc:
            raise StateError(f"{self.path} is not a peer cache this oeagent can read ({exc}); "
                             "the installed policy is left as it is: move the file aside to "
                             "look every peer up again as on first contact") from None
        self.claims_after = max((t for e in self.entries.values()
                                 for t in e.decision.since.values()), default=None)
        """The newest claim date in the file: claims made by this run are dated after it."""

    def update(self, result: Result, now: dt.datetime) -> tuple[Entry, bool]:
        """Merge ``result``; return the new entry and whether its decision now differs from
        the one the installed policy holds (so the policy must be re-applied)."""
        if result.refused:
            # No name or address: nothing to hold it to and nothing to look up again (an
            # entry an older version kept goes). The row shown for it needs no cache entry.
            self.entries.pop(result.peer, None)
            return merge(None, result, now), self.differs(result.peer, now)
        new = merge(self.entries.get(result.peer), result, now, self.claims_after)
        self.entries[result.peer] = new
        return new, self.differs(result.peer, now)

    def decisions(self, now: dt.datetime) -> list[Decision]:
        return [e.effective(now) for _, e in sorted(self.entries.items())]

    def effective_keys(self, now: dt.datetime) -> dict[str, InstalledKey]:
        """What a policy rendered at ``now`` holds each peer to (clear-or-null ones left out)."""
        keys = {peer: e.effective(now).key() for peer, e in sorted(self.entries.items())}
        return {peer: installed_form(key) for peer, key in keys.items() if key != NULL_KEY}

    def differs(self, peer: str, now: dt.datetime) -> bool:
        entry = self.entries.get(peer)
        key = entry.effective(now).key() if entry else NULL_KEY
        return installed_form(key) != self.installed.get(peer, installed_form(NULL_KEY))

    def changed(self, now: dt.datetime) -> list[str]:
        """Peers whose decision at ``now`` is not the one the installed policy holds."""
        return sorted(p for p in {*self.entries, *self.installed} if self.differs(p, now))

    def record_installed(self, keys: dict[str, InstalledKey], policy: str | None) -> None:
        """The policy now installed (digest ``policy``) was rendered from ``keys``
        (``effective_keys`` taken before rendering: if the cache moved on meanwhile, the next
        refresh sees a change and re-applies, which is idempotent)."""
        self.installed = dict(keys)
        self.installed_policy = policy

    def due(self, now: dt.datetime, timing: Timing) -> list[str]:
        """Peers to look up again at ``now`` (see ``Timing``)."""
        return sorted(p for p, e in self.entries.items() if e.next_lookup(timing) <= now)

    def next_due(self, now: dt.datetime, timing: Timing) -> dt.datetime | None:
        """The next time something is to be done: a lookup falls due, or a held advertisement
        expires (the decision changes without any lookup). None without peers; may be in the
        past when a lookup is overdue."""
        times = [e.next_lookup(timing) for e in self.entries.values()]
        times += [e.decision.held_until for e in self.entries.values()
                  if e.held_advertisement(now) and e.decision.held_until is not None]
        return min(times, default=None)

    def save(self) -> None:
        self.state.write_json(self.path, {
            "version": VERSION,
            "peers": {peer: e.to_json() for peer, e in sorted(self.entries.items())},
            "installed": dict(sorted(self.installed.items())),
            "installed_policy": self.installed_policy,
        }, inline_below=2)
