"""Discover one peer: signed DNS first, then the well-known HTTPS document; classify precisely.

Outcomes (``Result.status``):

- ``authenticated``: a valid advertisement in mode enforce or testing, from DNSSEC-secure
  records or a PKIX-validated HTTPS document;
- ``none``: validated proof that nothing is published, an unsigned zone with nothing usable,
  or a validly published ``mode=none``;
- ``bogus``: DNSSEC validation failed (SERVFAIL with a DNSSEC Extended DNS Error);
- ``unreachable``: the resolver or the name's servers did not answer;
- ``invalid``: something was published but failed the checks (each reason is kept).

Bogus, unreachable and invalid are never "none": the cache keeps an unexpired enforce
advertisement through them (``oeagent.discovery.holding``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dns.name
import dns.rdatatype
import dns.reversename

from oeagent import names
from oeagent.advertisement import (
    MAX_ADDRESSES,
    Advertisement,
    AdvertisementError,
    TxtSignal,
    parse_document,
    parse_txt,
)
from oeagent.config import DiscoveryConfig
from oeagent.discovery import records, wellknown
from oeagent.resolver import Answer, Resolver, Security, query

if TYPE_CHECKING:
    from oeagent.discovery.validate import Validator

STATUSES = ("authenticated", "none", "bogus", "unreachable", "invalid")
_MAX_ADDRESSES = 4  # HTTPS attempts per peer; more only makes a hostile name slower


@dataclass
class Result:
    peer: str
    fqdn: str | None = None
    status: str = "none"
    source: str = ""
    advertisement: Advertisement | None = None
    expires: dt.datetime | None = None
    """Until when ``advertisement`` may be relied on (cache lifetime)."""
    addresses: tuple[str, ...] = ()
    reasons: list[str] = field(default_factory=list)
    txt_id: str | None = None
    notes: list[str] = field(default_factory=list)
    """What the operator should see even when the peer is authenticated (addresses dropped)."""
    incomplete: str = ""
    """``bogus`` or ``unreachable`` when an A or AAAA query for the name failed: ``addresses``
    may lack some of the name's, so this result must not replace a held advertisement's
    (``oeagent.discovery.holding.merge``); empty when every address query was answered."""
    unsigned_families: tuple[int, ...] = ()
    """The IP versions (4, 6) whose A or AAAA answer for the name was not DNSSEC-secure: an
    address of that version that the answer left out may have been removed by whoever is on
    the DNS path (``holding.merge`` does not drop a held address for it while the document
    still covers the address)."""
    dns_failure: str = ""
    """``bogus``, ``unreachable`` or ``invalid`` when the advertisement came over HTTPS after
    the DNS lookup failed: it must not replace a held DNSSEC-signed advertisement, which the
    failed answer may well still hold."""
    refused: bool = False
    """The peer is no name or address: refused before any lookup, never cached."""

    @property
    def released(self) -> bool:
        """A validly published ``mode=none``: the peer withdrew its promise."""
        return self.advertisement is not None and self.advertisement.mode == "none"

    def as_dict(self) -> dict[str, Any]:
        ad = self.advertisement
        return {
            "peer": self.peer, "fqdn": self.fqdn, "status": self.status,
            "source": self.source or None, "mode": ad.mode if ad else None,
            "auth": ad.auth if ad else None, "pins": list(ad.pins) if ad else [],
            "addresses": list(self.addresses),
            "expires": self.expires.isoformat() if self.expires else None,
            "reasons": self.reasons, "notes": self.notes,
        }


class Discoverer:
    def __init__(self, cfg: DiscoveryConfig) -> None:
        self.cfg = cfg
        self.resolver = Resolver(cfg.resolver, cfg.resolver_port, cfg.dns_timeout,
                                 cfg.resolver_trusted)
        self.tls = wellknown.tls_context(cfg.https_ca_bundle) if cfg.https else None
        self.validator: Validator | None = None
        if cfg.validation == "in-process":
            # Imported here: dns.dnssec and dns.zone are ~50 ms of start-up that discovery
            # through a validating resolver (the default) never needs.
            from oeagent.discovery.anchors import load_anchors
            from oeagent.discovery.validate import Validator

            assert cfg.trust_anchors is not None  # the config reader requires it
            self.validator = Validator(self.resolver, load_anchors(cfg.trust_anchors))

    def _query(self, name: dns.name.Name | str, rdtype: str) -> Answer:
        """Through the resolver: judged by its AD bit, or validated here (in-process)."""
        if self.validator is not None:
            return self.validator.query(name, rdtype)
        return query(self.resolver, name, rdtype)

    def lookup(self, peer: str, now: dt.datetime) -> Result:
        address = None
        if names.could_be_ip(peer):  # most peers are names: no failed parse for them
            with contextlib.suppress(ValueError):
                address = names.normalize_ip(peer)
        if address is None:
            try:
                fqdn = names.normalize_fqdn(peer)
            except ValueError as exc:
                # The refusal names the peer once, cut short: it may be a 50 MB line.
                why = str(exc).replace(repr(peer), "it")
                return Result(peer, status="invalid", refused=True,
                              reasons=[f"not a name or address: {why}"])
            return self._lookup_name(Result(fqdn, fqdn), now, reverse=None)
        return self._lookup_address(Result(address), address, now)

    def _lookup_address(self, result: Result, address: str, now: dt.datetime) -> Result:
        """Reverse lookup, then the forward name must map back to ``address``, both secure:
        an identity bound to an address through forgeable DNS would name the forger."""
        reverse = dns.reversename.from_address(address)
        ptr = self._query(reverse, "PTR")
        if ptr.security in (Security.BOGUS, Security.UNREACHABLE):
            return _fail(result, ptr)
        if ptr.security is not Security.SECURE or ptr.empty:
            result.reasons.append(f"{reverse}: no DNSSEC-signed PTR; no identity to bind")
            return result
        assert ptr.rrset is not None
        for rdata in ptr.rrset:
            try:
                candidate = names.normalize_fqdn(str(rdata.target))
            except ValueError as exc:
                result.reasons.append(f"{reverse}: PTR ignored: {exc}")
                continue
            forward = self._signed_addresses(candidate, result)
            if address in forward:
                result.fqdn = candidate
                return self._lookup_name(result, now, reverse=reverse)
            result.reasons.append(f"{candidate} does not map back to {address} (signed)")
        if result.incomplete:
            # Not "none": the forward query failed, so nothing shows the name is not there.
            result.status = result.incomplete
        return result

    def _signed_addresses(self, fqdn: str, result: Result) -> list[str]:
        return [a for a, secure in self._resolve(dns.name.from_text(f"{fqdn}."), result)
                if secure]

    def _resolve(self, name: dns.name.Name, result: Result) -> list[tuple[str, bool]]:
        """The name's A and AAAA addresses, each with whether it is DNSSEC-secure."""
        found: list[tuple[str, bool]] = []
        for rdtype in ("A", "AAAA"):
            answer = self._query(name, rdtype)
            if answer.rrset is None:
                if answer.security in (Security.BOGUS, Security.UNREACHABLE):
                    result.reasons.append(answer.reason or f"DNS: {name} {rdtype}: "
                                          f"{answer.security.value}")
                    result.incomplete = result.incomplete or answer.security.value
                elif answer.security is not Security.SECURE:
                    result.unsigned_families += (4 if rdtype == "A" else 6,)
                continue
            if answer.security is not Security.SECURE:
                result.unsigned_families += (4 if rdtype == "A" else 6,)
            for rdata in answer.rrset:
                address = ipaddress.ip_address(rdata.address)  # parsed once: every peer has some
                if not address.is_unspecified:
                    found.append((str(address), answer.security is Security.SECURE))
        return found

    def _lookup_name(self, result: Result, now: dt.datetime, reverse: dns.name.Name | None
                     ) -> Result:
        fqdn = result.fqdn
        assert fqdn is not None
        name = dns.name.from_text(f"{fqdn}.")  # parsed once for every query about it
        resolved = self._resolve(name, result)
        result.addresses = _at_most([a for a, _ in resolved], result)
        secure = tuple(a for a in result.addresses if (a, True) in resolved)
        dns_failure = self._from_dns(result, name, reverse, now, secure)
        if result.advertisement is None and self.tls is not None:
            self._from_https(result, fqdn, now)
            if result.advertisement is not None and dns_failure is not None:
                result.dns_failure = dns_failure
                result.notes.append(f"DNS failed ({dns_failure}): the HTTPS document does not "
                                    "replace a DNSSEC-signed advertisement held from before")
        if result.advertisement is not None:
            if result.incomplete and not result.released:
                result.notes.append(f"DNS: an address query for {fqdn} failed "
                                    f"({result.incomplete}): addresses may be missing, so an "
                                    "advertisement held from before keeps its own")
            return result
        if dns_failure is not None:
            result.status = dns_failure
        return result

    def _from_dns(self, result: Result, name: dns.name.Name, reverse: dns.name.Name | None,
                  now: dt.datetime, secure: tuple[str, ...]) -> str | None:
        """Fill ``result`` from signed records; return a failure status, or None.

        A signed advertisement covers only the name's DNSSEC-secure addresses (``secure``):
        an unsigned A/AAAA (a CNAME into an unsigned zone) could be forged on the way."""
        fqdn = result.fqdn
        assert fqdn is not None
        txt = self._query(records.txt_name(name), "TXT")
        if txt.security in (Security.BOGUS, Security.UNREACHABLE):
            result.reasons.append(txt.reason)
            return str(txt.security.value)
        if txt.empty:
            proof = "validated" if txt.security is Security.SECURE else "unsigned zone"
            result.reasons.append(f"DNS: no _oe record ({proof})")
            return None
        if txt.security is not Security.SECURE:
            result.reasons.append("DNS: _oe record is not DNSSEC-signed; ignored")
            return None
        try:
            signal = _txt_signal(txt)
            result.txt_id = signal.id
            if signal.mode == "none":
                advert = Advertisement(fqdn, "ecdsa", (), "none", self._ttl([txt]))
                self._accept(result, advert, "dns", now)
                return None
            tlsa = [self._query(records.tlsa_name(name, p), "TLSA") for p in (500, 4500)]
            key = self._query(name, "IPSECKEY")
            if key.empty and reverse is not None:
                key = self._query(reverse, "IPSECKEY")  # RFC 4025 reverse tree
            for answer in (*tlsa, key):
                if answer.security in (Security.BOGUS, Security.UNREACHABLE):
                    result.reasons.append(answer.reason)
                    return str(answer.security.value)
            auth, pins, ports = _keys_from(tlsa, key)
            advert = Advertisement(fqdn, auth, pins, signal.mode, self._ttl([txt, *tlsa, key]),
                                   secure, ports)
        except AdvertisementError as exc:
            result.reasons.append(f"DNS: {exc}")
            return "invalid"
        result.notes += [f"DNS: {a} is not DNSSEC-signed; not used for the signed advertisement"
                         for a in result.addresses if a not in secure]
        self._accept(result, advert, "dns", now)
        result.addresses = secure
        return None

    def _ttl(self, answers: list[Answer]) -> int:
        ttls = [a.ttl for a in answers if a.rrset is not None]
        return max(self.cfg.min_cache, min([*ttls, self.cfg.max_cache]))

    def _accept(self, result: Result, advert: Advertisement, source: str, now: dt.datetime,
                expires: dt.datetime | None = None) -> None:
        result.advertisement = advert
        result.source = source
        result.status = "none" if advert.mode == "none" else "authenticated"
        lifetime = now + dt.timedelta(seconds=advert.max_age)
        result.expires = min(lifetime, expires) if expires else lifetime

    def _from_https(self, result: Result, fqdn: str, now: dt.datetime) -> None:
        assert self.tls is not None
        if not result.addresses:
            result.reasons.append("HTTPS: the name has no address")
            return
        for address in result.addresses[:_MAX_ADDRESSES]:
            got = wellknown.fetch(fqdn, address, port=self.cfg.https_port, context=self.tls,
                                  timeout=self.cfg.https_timeout)
            if got.body is None:
                result.reasons.append(f"HTTPS: {got.reason}")
                if got.absent:
                    continue
                result.status = "invalid"
                return
            try:
                advert, expires = parse_document(got.body, fqdn, now)
            except AdvertisementError as exc:
                result.reasons.append(f"HTTPS: {exc}")
                result.status = "invalid"
                return
            self._accept(result, advert, "https", now, expires=expires)
            result.addresses = self._vouched(result, advert)
            return

    @staticmethod
    def _vouched(result: Result, advert: Advertisement) -> tuple[str, ...]:
        """The document's addresses that the name's own A/AAAA records also give.

        The certificate proves the document speaks for the name, not that the name owns the
        addresses it lists: a per-peer conn drops traffic to its address when the peer fails
        to authenticate, so an address taken from the document alone would let any name with
        a certificate cut clients off from any address. A document without addresses stands
        for all of the name's addresses."""
        if not advert.addresses:
            return result.addresses
        dns_addresses = set(result.addresses)
        kept = tuple(a for a in advert.addresses if a in dns_addresses)
        result.notes += [f"HTTPS: {a} is in the document but not in {advert.fqdn}'s A/AAAA "
                         "records; dropped" for a in advert.addresses if a not in dns_addresses]
        return kept


def _fail(result: Result, answer: Answer) -> Result:
    result.status = answer.security.value
    result.reasons.append(answer.reason)
    return result


def _at_most(addresses: list[str], result: Result) -> tuple[str, ...]:
    """At most MAX_ADDRESSES (as the document allows), sorted: each becomes a conn in the
    policy, so a name with thousands of A records must not become thousands of conns, and a
    resolver rotating the order must not change the decision (and re-apply the policy) on
    every lookup. The lowest ones are kept."""
    ordered = sorted(dict.fromkeys(addresses), key=names.address_order)
    if len(ordered) > MAX_ADDRESSES:
        result.reasons.append(f"DNS: {len(ordered)} addresses; only the lowest "
                              f"{MAX_ADDRESSES} are used")
    return tuple(ordered[:MAX_ADDRESSES])


def _bounded(answer: Answer) -> None:
    """Refuse an RRset larger than records.MAX_RRSET before reading any of it."""
    if answer.rrset is not None and len(answer.rrset) > records.MAX_RRSET:
        raise AdvertisementError(
            f"{dns.rdatatype.to_text(answer.rdtype)} {answer.name} has {len(answer.rrset)} "
            f"records; more than {records.MAX_RRSET} are refused")


def _why(answers: list[Answer]) -> str:
    """The resolver side's reasons (e.g. records for other names that were ignored)."""
    said = [a.reason for a in answers if a.reason]
    return f" ({'; '.join(said)})" if said else ""


def _txt_signal(txt: Answer) -> TxtSignal:
    assert txt.rrset is not None
    _bounded(txt)
    texts = [b"".join(r.strings).decode("utf-8", "replace") for r in txt.rrset]
    ours = [t for t in texts if t.startswith("v=OE")]
    if len(ours) != 1:
        raise AdvertisementError(f"expected one v=OE1 TXT record at _oe, found {len(ours)}")
    return parse_txt(ours[0])


def _keys_from(tlsa: list[Answer], key: Answer) -> tuple[str, tuple[str, ...], tuple[int, ...]]:
    """Pins from the TLSA records, auth from the IPSECKEY, which must be one of the pins."""
    pins: list[str] = []
    ports: list[int] = []
    for port, answer in zip((500, 4500), tlsa, strict=True):
        if answer.rrset is None:
            continue
        _bounded(answer)
        if answer.security is not Security.SECURE:
            raise AdvertisementError(f"TLSA at _{port}._udp is not DNSSEC-signed")
        ports.append(port)
        for rdata in answer.rrset:
            pin = records.tlsa_pin(rdata)
            if pin is not None and pin not in pins:
                pins.append(pin)
    if not pins:
        raise AdvertisementError("signed _oe record but no TLSA 3 1 1 pin at _500/_4500._udp"
                                 + _why(tlsa))
    if key.rrset is None or key.security is not Security.SECURE:
        raise AdvertisementError("signed _oe record but no DNSSEC-signed IPSECKEY" + _why([key]))
    _bounded(key)
    # Lowest precedence first: the publisher gives the current key 10 and a next key 20.
    found = [records.ipseckey_public(r) for r in sorted(key.rrset, key=lambda r: r.precedence)]
    pinned = [(auth, pin) for auth, pin in found if pin in pins]
    if not pinned:
        raise AdvertisementError("no IPSECKEY key matches a TLSA pin")
    auth, current = pinned[0]
    ordered = (current, *(p for p in pins if p != current))[: 8]
    return auth, ordered, tuple(ports)
