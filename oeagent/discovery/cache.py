"""``STATE/peers.json``: every peer's record (``oeagent.discovery.entries``), updated by
the no-downgrade rules (``oeagent.discovery.holding``).

The file also records, per peer, the decision the installed policy was rendered from
(``installed``): a change is a difference between that and the decision in effect now, so
an expiry that no lookup noticed, or a one-shot ``oeagent discover``, still re-applies the
policy, and a refresh that finds the same advertisement again does not. ``next_due`` says
when the next lookup falls due (or a held advertisement expires), for the agent's schedule.
"""

from __future__ import annotations

import datetime as dt

from oeagent.discovery.entries import (
    NULL_KEY,
    Decision,
    Entry,
    InstalledKey,
    Timing,
    installed_form,
    optional_text,
    read_entries,
)
from oeagent.discovery.holding import merge
from oeagent.discovery.lookup import Result
from oeagent.errors import StateError
from oeagent.state import StateDir

FILE = "peers.json"
VERSION = 1


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
            self.entries: dict[str, Entry] = read_entries(raw["peers"])
            installed = raw.get("installed", {})
            if not isinstance(installed, dict):
                raise ValueError("installed is not a JSON object")
            self.installed: dict[str, InstalledKey] = dict(installed)
            """Per peer, the decision key the installed policy was rendered from (absent:
            the peer got no conn of its own, as for a clear-or-null decision)."""
            self.installed_policy: str | None = optional_text(raw, "installed_policy")
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
