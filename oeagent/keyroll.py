"""Certificate key rollover: the next key is made ahead of time, announced, then switched in.

Keys are reused by default (DNS pins stay valid). With ``rollover.key_lifetime`` set, the
next key is generated ``rollover.announce`` before the current one reaches that age and kept
as ``STATE/keys/next.pem``; the publishing side reads its pin with ``current_and_next_keys``
and publishes it next to the current one. At the first renewal once the next key has been
announced for ``rollover.announce``, the new certificate is ordered for the next key, which
becomes current only after the CA issued it: a failed renewal never loses the working key.

``STATE/keys/keys.json``::

    {"current": {"spki_sha256", "algorithm", "created_at", "current_since"},
     "next":    {"spki_sha256", "algorithm", "created_at", "announced_at"}}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oeagent import keys
from oeagent.config import Config
from oeagent.fsio import PRIVATE_FILE
from oeagent.report import Reporter
from oeagent.state import StateDir, read_time


@dataclass(frozen=True)
class KeyInfo:
    spki_sha256: str
    """Hex SHA-256 of the SubjectPublicKeyInfo: the TLSA 3 1 1 / pin value."""
    algorithm: str
    created_at: dt.datetime
    current_since: dt.datetime | None = None
    announced_at: dt.datetime | None = None
    """When the publisher says it published this key's pin; None: not recorded."""

    def announced_since(self) -> dt.datetime:
        # Without a publisher recording it, a next key counts as announced from its creation.
        return self.announced_at or self.created_at

    def as_dict(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, dt.datetime) else v
                for k, v in asdict(self).items()}


def next_key_path(state: StateDir) -> Path:
    return state.cert_key_path.with_name("next.pem")


def _record_path(state: StateDir) -> Path:
    return state.cert_key_path.with_name("keys.json")


def _info(entry: Any, key: keys.PrivateKey, now: dt.datetime) -> KeyInfo:
    entry = entry if isinstance(entry, dict) else {}
    spki = keys.spki_sha256(key)
    if entry.get("spki_sha256") != spki:
        entry = {}  # the record is about another key (replaced by hand): start it afresh
    # A damaged or zone-less time reads as absent: the record is advice, the key is not.
    created = read_time(entry.get("created_at")) or now
    return KeyInfo(spki, keys.key_algorithm(key), created,
                   read_time(entry.get("current_since")), read_time(entry.get("announced_at")))


def _load(state: StateDir, path: Path) -> keys.PrivateKey | None:
    pem = state.read_bytes(path)
    return keys.load_key_pem(pem, f"certificate key {path.name}") if pem else None


def load_next_key(state: StateDir) -> keys.PrivateKey | None:
    return _load(state, next_key_path(state))


def current_and_next_keys(state: StateDir,
                          now: dt.datetime | None = None) -> tuple[KeyInfo | None, KeyInfo | None]:
    """The current certificate key and the announced next one (None when there is none).

    For the publisher: publish pins for both while a next key exists, so clients that
    cached the records still accept the host after the switch.
    """
    now = now or dt.datetime.now(dt.UTC)
    record = state.read_json(_record_path(state)) or {}
    current = _load(state, state.cert_key_path)
    upcoming = _load(state, next_key_path(state))
    return (_info(record.get("current"), current, now) if current else None,
            _info(record.get("next"), upcoming, now) if upcoming else None)


def mark_announced(state: StateDir, spki_sha256: str, when: dt.datetime) -> None:
    """Record that the next key's pin was published at ``when`` (called by the publisher)."""
    current, upcoming = current_and_next_keys(state, when)
    if upcoming is None or upcoming.spki_sha256 != spki_sha256 or upcoming.announced_at:
        return
    _save(state, current, KeyInfo(upcoming.spki_sha256, upcoming.algorithm,
                                  upcoming.created_at, None, when))


def _save(state: StateDir, current: KeyInfo | None, upcoming: KeyInfo | None) -> None:
    state.write_json(_record_path(state), {
        "current": current.as_dict() if current else None,
        "next": upcoming.as_dict() if upcoming else None,
    })


def next_key_due(config: Config, current: KeyInfo | None) -> dt.datetime | None:
    """When the next key should exist, or None when keys never roll."""
    if not config.rollover.key_lifetime or not config.key.reuse or current is None:
        return None
    since = current.current_since or current.created_at
    return since + dt.timedelta(seconds=config.rollover.key_lifetime - config.rollover.announce)


def prepare(config: Config, state: StateDir, reporter: Reporter,
            now: dt.datetime) -> KeyInfo | None:
    """Make the next key when it is time (idempotent); return the next key's info, if any."""
    current, upcoming = current_and_next_keys(state, now)
    if current is not None and current.current_since is None:
        current = KeyInfo(current.spki_sha256, current.algorithm, current.created_at, now)
        _save(state, current, upcoming)  # first sighting starts the lifetime clock
    due = next_key_due(config, current)
    if upcoming is not None or due is None or now < due:
        return upcoming
    new = keys.generate_key(config.key.algorithm)
    state.write_bytes(next_key_path(state), keys.key_to_pem(new), PRIVATE_FILE)
    upcoming = KeyInfo(keys.spki_sha256(new), config.key.algorithm, now)
    _save(state, current, upcoming)
    switch = now + dt.timedelta(seconds=config.rollover.announce)
    reporter.step("key", f"generated the next certificate key; it takes over at the first "
                  f"renewal after {switch.isoformat()}", next_spki_sha256=upcoming.spki_sha256)
    return upcoming


def switch_ready(config: Config, state: StateDir, now: dt.datetime) -> keys.PrivateKey | None:
    """The next key, when it has been announced long enough to be used for this renewal."""
    _, upcoming = current_and_next_keys(state, now)
    if upcoming is None or not config.key.reuse:
        return None
    if now - upcoming.announced_since() < dt.timedelta(seconds=config.rollover.announce):
        return None
    if config.publish.backends:
        # Clients may hold the old records for two TTLs (DNS) or one max_age (the document):
        # the next pin must have been out that long before the key may be used (RFC 7671).
        from oeagent.publish.advertise import earliest_switch

        allowed = earliest_switch(config, state, upcoming.spki_sha256)
        if allowed is None or now < allowed:
            return None
    if upcoming.algorithm != config.key.algorithm:
        return None
    return _load(state, next_key_path(state))


def promote_next(state: StateDir, now: dt.datetime) -> None:
    """After the CA issued for the next key: it becomes current (old key kept as previous)."""
    upcoming_key = _load(state, next_key_path(state))
    if upcoming_key is None:
        return
    old = state.read_bytes(state.cert_key_path)
    if old is not None:
        state.write_bytes(state.cert_key_path.with_name("previous.pem"), old, PRIVATE_FILE)
    state.write_bytes(state.cert_key_path, keys.key_to_pem(upcoming_key), PRIVATE_FILE)
    _, upcoming = current_and_next_keys(state, now)
    assert upcoming is not None
    _save(state, KeyInfo(upcoming.spki_sha256, upcoming.algorithm, upcoming.created_at, now),
          None)
    next_key_path(state).unlink(missing_ok=True)
