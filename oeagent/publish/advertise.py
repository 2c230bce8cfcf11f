"""Deriving the advertisement from what is deployed, and the ledger of what was published.

Never typed by hand: the identity is the first configured name, the auth method and pins come
from the deployed certificate's key, plus the next key during a rollover. The ledger
(``STATE/published.json``) remembers when each pin first went out (the rollover rule needs
it) and when the host was unenrolled (mode ``none`` stays for one max_age).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oeagent import certstore, keyroll, keys
from oeagent.advertisement import AUTH_METHODS, Advertisement
from oeagent.config import Config
from oeagent.errors import StateError
from oeagent.publish import records
from oeagent.publish.base import Desired, PublishError
from oeagent.state import StateDir, read_time


def advertised_keys(state: StateDir, current: keys.PublicKey) -> tuple[keys.PublicKey, ...]:
    """The keys to pin, current first: the deployed key, plus the next key if one is staged
    by the renewal side's key rollover (``oeagent.keyroll``)."""
    _, upcoming = keyroll.current_and_next_keys(state)
    if upcoming is None:
        return (current,)
    next_key = keyroll.load_next_key(state)
    if next_key is None or keys.spki_der(next_key) == keys.spki_der(current):
        return (current,)
    return (current, next_key.public_key())


@dataclass
class Ledger:
    """What was published, and since when (``STATE/published.json``)."""

    pins: dict[str, str]
    """pin -> ISO time it was first published (kept while it stays advertised)."""
    unenrolled_at: str | None = None
    purged: bool = False
    auth: str | None = None
    """The last advertised auth method: mode none needs one after a revoke removed the cert."""

    @classmethod
    def load(cls, state: StateDir) -> Ledger:
        path = ledger_path(state)
        raw = state.read_json(path) or {}
        pins = raw.get("pins") if isinstance(raw.get("pins"), dict) else {}
        auth = raw.get("auth") if raw.get("auth") in AUTH_METHODS else None
        unenrolled_at = raw.get("unenrolled_at")
        # The times are checked here, not where they are used (exit 70 there), and a damaged
        # one is never dropped: without unenrolled_at an unenrolled host would advertise
        # itself again.
        for field, value in [("unenrolled_at", unenrolled_at),
                             *((f"pins[{pin!r}]", when) for pin, when in (pins or {}).items())]:
            if value is not None and read_time(value) is None:
                raise StateError(f"{path} is damaged: {field} is not a time with a zone; "
                                 "fix or remove that field")
        return cls(dict(pins or {}), unenrolled_at, bool(raw.get("purged", False)), auth)

    def save(self, state: StateDir, advert: Advertisement | None) -> None:
        if advert is not None:
            self.auth = advert.auth
        document: dict[str, Any] = {"pins": self.pins, "unenrolled_at": self.unenrolled_at,
                                    "purged": self.purged, "auth": self.auth}
        if advert is not None:
            document.update(id=advert.id, mode=advert.mode, fqdn=advert.fqdn)
        state.write_json(ledger_path(state), document)

    def unenrolled_time(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.unenrolled_at) if self.unenrolled_at else None

    def note_pins(self, pins: tuple[str, ...], now: dt.datetime) -> None:
        self.pins = {pin: self.pins.get(pin, now.isoformat()) for pin in pins}


def ledger_path(state: StateDir) -> Path:
    return state.root / "published.json"


def deployed_certificate(config: Config, state: StateDir) -> certstore.StoredCertificate:
    """The certificate NSS holds for this host (per the deployment record), or a clear error."""
    current = certstore.load_current(state) if state.root.exists() else None
    record = state.read_json(state.deployed_path) if state.root.exists() else None
    if current is None or record is None or record.get("serial") != current.serial_hex:
        raise PublishError("nothing to advertise: no certificate is deployed; "
                           "run `oeagent enroll` first")
    return current


def desired(config: Config, state: StateDir, now: dt.datetime, mode: str | None = None,
            none_since: dt.datetime | None = None, last_auth: str | None = None) -> Desired:
    """The advertisement for the deployed identity; ``mode`` overrides the configured one.

    In mode ``none`` nothing is pinned and the document expires one max_age after the host
    was unenrolled: by then every client that cached it has let go.
    """
    pub = config.publish
    mode = mode or pub.mode
    if mode == "none":
        # Withdrawing needs no deployed identity (unenroll may have removed it from NSS, or
        # revoked it); the auth method is then the one last advertised.
        stored = certstore.load_current(state) if state.root.exists() else None
        if stored is None:
            if last_auth is None:
                raise PublishError("nothing was ever enrolled here: no certificate in the state")
            advert = Advertisement(fqdn=config.host.names[0], auth=last_auth, pins=(),
                                   mode="none", max_age=config.publish.max_age,
                                   addresses=config.publish.addresses)
            expires = (none_since or now) + dt.timedelta(seconds=config.publish.max_age)
            return Desired(advert, (), expires)
        cert = stored
    else:
        cert = deployed_certificate(config, state)
    public = cert.cert.public_key()
    if not isinstance(public, keys.PublicKey):
        raise PublishError("the deployed certificate's key is neither ECDSA nor RSA")
    try:
        auth = records.auth_method(public)
    except ValueError as exc:
        raise PublishError(str(exc)) from None
    pinned = advertised_keys(state, public) if mode != "none" else ()
    advert = Advertisement(
        fqdn=config.host.names[0],
        auth=auth,
        pins=tuple(keys.spki_sha256(k) for k in pinned),
        mode=mode,
        max_age=pub.max_age,
        addresses=pub.addresses,
    )
    if mode == "none":
        expires = (none_since or now) + dt.timedelta(seconds=pub.max_age)
    else:
        # Valid while the certificate is: a host that stops renewing stops being advertised,
        # and the document only changes when something a client acts on changes.
        expires = cert.not_after
    return Desired(advert, pinned, expires)


def earliest_switch(config: Config, state: StateDir, next_pin: str) -> dt.datetime | None:
    """When the next key may be deployed (RFC 7671 §8.1): its pin out for two TTLs in DNS and
    one max_age in the document. None: the pin has not been published yet."""
    first = Ledger.load(state).pins.get(next_pin)
    if first is None:
        return None
    pub = config.publish
    wait = 0
    if {"rfc2136", "zonefile"} & set(pub.backends):
        wait = max(wait, 2 * pub.dns.ttl)
    if "wellknown" in pub.backends:
        wait = max(wait, pub.max_age)
    return dt.datetime.fromisoformat(first) + dt.timedelta(seconds=wait)
