"""The OE advertisement: what an enrolled host promises, and its two wire forms.

oeagent's own convention (no standard exists for OE discovery); README "Advertisement
formats" documents it for other implementations. One model, shared by the publishing side
(which derives it from the deployed certificate and key) and the discovery side (which parses
and checks what a peer published, treating every byte as hostile).

- DNS: TXT ``_oe.<fqdn>`` = ``v=OE1; id=<id>; mode=<mode>`` (the cheap change signal, as
  MTA-STS's ``_mta-sts`` TXT), plus TLSA and IPSECKEY records built by ``oeagent.publish``.
- HTTPS: ``https://<fqdn>/.well-known/oe-ipsec``, a small JSON document (``document()``).
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from oeagent import names
from oeagent.errors import OeagentError

VERSION = "OE1"
WELL_KNOWN_PATH = "/.well-known/oe-ipsec"
TXT_LABEL = "_oe"
MODES = ("testing", "enforce", "none")
AUTH_METHODS = ("ecdsa", "rsasig")
DEFAULT_IKE_PORTS = (500, 4500)
MIN_MAX_AGE = 60
MAX_MAX_AGE = 31_557_600  # one year, MTA-STS's bound
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_PINS = 8
MAX_ADDRESSES = 16
_PIN = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_DOCUMENT_KEYS = {
    "version", "fqdn", "addresses", "ike_ports", "auth", "pins", "mode", "max_age", "id",
    "expires",
}  # fmt: skip


class AdvertisementError(OeagentError):
    """A published advertisement is malformed or does not belong to the peer asked about."""


@dataclass(frozen=True)
class Advertisement:
    fqdn: str
    auth: str
    """How the host authenticates in IKE: ``ecdsa`` (P-256 keys) or ``rsasig`` (RSA keys)."""
    pins: tuple[str, ...]
    """SPKI SHA-256 (hex) of the current key first, then the next key during a rollover."""
    mode: str = "enforce"
    max_age: int = 86_400
    addresses: tuple[str, ...] = ()
    ike_ports: tuple[int, ...] = DEFAULT_IKE_PORTS

    @property
    def id(self) -> str:
        """A short hash of everything a client acts on; it changes when any of it changes."""
        canonical = json.dumps(self._core(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def _core(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "fqdn": self.fqdn,
            "addresses": list(self.addresses),
            "ike_ports": list(self.ike_ports),
            "auth": self.auth,
            "pins": list(self.pins),
            "mode": self.mode,
            "max_age": self.max_age,
        }

    def txt(self) -> str:
        return f"v={VERSION}; id={self.id}; mode={self.mode}"

    def document(self, expires: dt.datetime) -> dict[str, Any]:
        return {**self._core(), "id": self.id, "expires": _iso(expires)}

    def document_bytes(self, expires: dt.datetime) -> bytes:
        return (json.dumps(self.document(expires), indent=2) + "\n").encode()


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TxtSignal:
    id: str
    mode: str


def parse_txt(text: str) -> TxtSignal:
    """Parse ``v=OE1; id=...; mode=...``; unknown fields are ignored, as MTA-STS does."""
    if len(text) > 255:
        raise AdvertisementError("the _oe TXT record is longer than 255 characters")
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            if part.strip():
                raise AdvertisementError(f"the _oe TXT record has a malformed field {part!r}")
            continue
        if key in fields:
            raise AdvertisementError(f"the _oe TXT record repeats {key!r}")
        fields[key] = value.strip()
    if fields.get("v") != VERSION:
        raise AdvertisementError(f"the _oe TXT record is not v={VERSION}")
    ident, mode = fields.get("id", ""), fields.get("mode", "")
    if not _ID.fullmatch(ident):
        raise AdvertisementError("the _oe TXT record has no valid id (16 hex digits)")
    if mode not in MODES:
        raise AdvertisementError(f"the _oe TXT record has mode {mode!r}, not one of {MODES}")
    return TxtSignal(ident, mode)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        # Counted once (a count per key was quadratic in a 64 KiB document of short keys);
        # shown quoted: the keys are the peer's text, bound for the operator's terminal.
        duplicated = sorted(k for k, n in collections.Counter(k for k, _ in pairs).items()
                            if n > 1)
        raise AdvertisementError("the document repeats the key(s) "
                                 + ", ".join(ascii(k) for k in duplicated[:5]))
    return document


def parse_document(data: bytes, peer: str, now: dt.datetime) -> tuple[Advertisement, dt.datetime]:
    """Strictly parse a well-known document fetched for ``peer``; return it and its expiry.

    Every rejection says why: size, encoding, JSON, duplicate keys, a wrong type or range,
    a malformed pin, a name that is not the peer's, an expired document.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise AdvertisementError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdvertisementError("the document is not UTF-8") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise AdvertisementError("the document is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, AdvertisementError):
            raise
        raise AdvertisementError(f"the document is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise AdvertisementError("the document is not a JSON object")
    unknown = sorted(set(raw) - _DOCUMENT_KEYS)
    if len(unknown) > 16:
        raise AdvertisementError("the document has too many unknown keys")

    def field(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise AdvertisementError(f"the document has no {key!r}")
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise AdvertisementError(f"the document's {key!r} has the wrong type")
        return value

    if field("version", str) != VERSION:
        raise AdvertisementError(f"the document's version is not {VERSION}")
    try:
        fqdn = names.normalize_fqdn(field("fqdn", str))
        expected = names.normalize_fqdn(peer)
    except ValueError as exc:
        raise AdvertisementError(f"the document's fqdn is invalid: {exc}") from None
    if fqdn != expected:
        raise AdvertisementError(f"the document is for {fqdn!r}, not for {expected!r}")
    mode = field("mode", str)
    if mode not in MODES:
        raise AdvertisementError(f"the document's mode {mode!r} is not one of {MODES}")
    auth = field("auth", str)
    if auth not in AUTH_METHODS:
        raise AdvertisementError(f"the document's auth {auth!r} is not one of {AUTH_METHODS}")
    max_age = field("max_age", int)
    if not MIN_MAX_AGE <= max_age <= MAX_MAX_AGE:
        raise AdvertisementError(
            f"the document's max_age {max_age} is outside {MIN_MAX_AGE}..{MAX_MAX_AGE}"
        )
    pins = field("pins", list)
    if len(pins) > MAX_PINS or any(not isinstance(p, str) or not _PIN.fullmatch(p) for p in pins):
        raise AdvertisementError(
            f"the document's pins must be up to {MAX_PINS} lower-case SHA-256 hex strings"
        )
    if mode != "none" and not pins:
        raise AdvertisementError(f"the document is in mode {mode!r} but pins no key")
    addresses = field("addresses", list)
    if len(addresses) > MAX_ADDRESSES:
        raise AdvertisementError(f"the document lists more than {MAX_ADDRESSES} addresses")
    try:
        checked_addresses = tuple(names.normalize_ip(a) for a in addresses)
    except ValueError as exc:
        raise AdvertisementError(f"the document's addresses: {exc}") from None
    ports = field("ike_ports", list)
    if not ports or len(ports) > 4 or any(
        isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535 for p in ports
    ):
        raise AdvertisementError("the document's ike_ports must be 1 to 4 port numbers")
    expires_text = field("expires", str)
    try:
        expires = dt.datetime.fromisoformat(expires_text.replace("Z", "+00:00"))
    except ValueError:
        raise AdvertisementError(f"the document's expires {expires_text!r} is not a time") from None
    if expires.tzinfo is None:
        raise AdvertisementError("the document's expires has no time zone")
    if expires <= now:
        raise AdvertisementError(f"the document expired at {_iso(expires)}")
    advert = Advertisement(
        fqdn=fqdn,
        auth=auth,
        pins=tuple(pins),
        mode=mode,
        max_age=max_age,
        addresses=checked_addresses,
        ike_ports=tuple(ports),
    )
    ident = field("id", str)
    if ident != advert.id:
        raise AdvertisementError("the document's id does not match its content")
    return advert, expires
