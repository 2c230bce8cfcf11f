"""The chain of trust: a zone's validated DNSKEY RRset, from a configured anchor down by DS.

``ZoneKeys`` answers two questions for ``validate.Validator``: which keys may sign data in a
zone (``keys``), and whether unsigned data at a name is excused by a proven insecure
delegation above it (``unsigned``). A zone's keys are trusted when one of them matches the
anchor or a validated DS from the parent, and that key signs the DNSKEY RRset (RFC 4035 §5).
Zones whose DS use only algorithms or digests we cannot check are insecure (RFC 4035 §5.2).
Verdicts on DNSKEY RRsets are cached for the life of the object (one discovery run).

The walk is recursive through the validator: a DS is itself an RRset judged like any answer
(signed by the parent's keys, or denied by a validated NSEC/NSEC3), so ``ZoneKeys`` is handed
the validator's ``judge`` and ``exchange`` as plain callables rather than subclassing it or
importing it. That keeps one direction of import (``validate`` -> ``zonekeys``), lets the two
be read apart, and leaves ``exchange`` a method of the validator that tests replace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS

from oeagent.discovery.anchors import ALGORITHMS, DIGESTS, Anchors, ds_matches, usable_key
from oeagent.discovery.nsec import Proof
from oeagent.discovery.verdict import Judged, time_problem
from oeagent.resolver import Security

T = dns.rdatatype.RdataType

Judge = Callable[[dns.name.Name, T], Judged]
"""Validate the RRset (or its denial) at a name and type: ``Validator._judge``."""
Exchange = Callable[[dns.name.Name, T], dns.message.Message]
"""Ask the resolver with DO and CD: ``Validator.exchange``."""


def parent_side(name: dns.name.Name, ds: bool) -> dns.name.Name:
    """Where data at ``name`` lives for trust-anchor purposes: a DS lives in the parent."""
    return name.parent() if ds and name != dns.name.root else name


class ZoneKeys:
    def __init__(self, anchors: Anchors, clock: Callable[[], float], judge: Judge,
                 exchange: Exchange) -> None:
        self.anchors = anchors
        self.clock = clock
        self._judge = judge
        self._exchange = exchange
        self._keys: dict[dns.name.Name, Judged] = {}
        self._lock = threading.Lock()

    def anchor_for(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest configured anchor at or above ``name``, if any."""
        found = [a for a in self.anchors if name.is_subdomain(a)]
        return max(found, key=len) if found else None

    def keys(self, zone: dns.name.Name) -> Judged:
        """The zone's validated DNSKEY RRset, or why it is insecure/bogus/unreachable."""
        anchor = self.anchor_for(zone)
        if anchor is None:
            return Judged(Security.INSECURE, f"no trust anchor covers {zone}")
        if zone in self.anchors:
            trusted = self.anchors[zone]
        else:
            ds = self._judge(zone, T.DS)
            if ds.security is not Security.SECURE:
                return ds
            if ds.answer is None or ds.answer.rrset is None:
                if ds.proof is Proof.DELEGATION:
                    return Judged(Security.INSECURE, f"{zone} is an insecure delegation "
                                                     f"(no DS: {ds.reason})")
                return Judged(Security.BOGUS, f"{zone}: signed data from a zone whose "
                                              "delegation is denied", not_a_zone=True)
            trusted = [ds.answer.rrset]
        return self._dnskeys(zone, trusted)

    def unsigned(self, name: dns.name.Name, exclude: bool, why: str) -> Judged:
        """Unsigned data at ``name``: insecure only under a proven insecure delegation (or
        outside every anchor); otherwise bogus. ``exclude``: ``name`` itself is not walked
        (a DS at ``name`` lives in the parent)."""
        anchor = self.anchor_for(parent_side(name, exclude))
        if anchor is None:
            return Judged(Security.INSECURE, f"{why}; no trust anchor covers {name}")
        top = self.keys(anchor)
        if top.security is not Security.SECURE:
            return top
        last = len(name) - (1 if exclude else 0)
        for depth in range(len(anchor) + 1, last + 1):
            cut = name.split(depth)[1]
            keys = self.keys(cut)
            if keys.security is Security.SECURE:
                continue
            if keys.security is Security.INSECURE:
                return Judged(Security.INSECURE, f"{why}; {keys.reason}")
            if keys.not_a_zone:  # not a zone cut: keep walking down
                continue
            return keys
        return Judged(Security.BOGUS, f"{why}, but it is inside a signed zone")

    def _dnskeys(self, zone: dns.name.Name, trusted: list[dns.rrset.RRset]) -> Judged:
        cached = self._keys.get(zone)
        if cached is not None:
            return cached
        ds = [d for r in trusted for d in r
              if isinstance(d, DS) and d.algorithm in ALGORITHMS and d.digest_type in DIGESTS]
        anchored_keys = [k for r in trusted for k in r
                         if isinstance(k, DNSKEY) and k.algorithm in ALGORITHMS]
        if not ds and not anchored_keys:
            algs = sorted({int(d.algorithm) for r in trusted for d in r})
            result = Judged(Security.INSECURE, f"{zone}: DS/anchor algorithms {algs} are not "
                                               "supported; treated as insecure (RFC 4035 §5.2)")
        else:
            result = self._check_dnskeys(zone, ds, anchored_keys)
        with self._lock:
            self._keys[zone] = result
        return result

    def _check_dnskeys(self, zone: dns.name.Name, ds: list[DS],
                       anchored: list[DNSKEY]) -> Judged:
        label = f"DNSKEY {zone}"
        try:
            reply = self._exchange(zone, T.DNSKEY)
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return Judged(Security.UNREACHABLE, f"{label}: {exc or 'timed out'}")
        if reply.rcode() != dns.rcode.NOERROR:
            return Judged(Security.UNREACHABLE, f"{label}: {dns.rcode.to_text(reply.rcode())}")
        keys = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.DNSKEY)
        sigs = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.RRSIG, T.DNSKEY)
        if keys is None or sigs is None:
            return Judged(Security.BOGUS, f"{label}: no signed DNSKEY RRset")
        entry = [k for k in keys if isinstance(k, DNSKEY) and usable_key(k)
                 and (k in anchored or any(ds_matches(zone, k, d) for d in ds))]
        tags = ", ".join(str(d.key_tag) for d in ds) or "anchored DNSKEY"
        if not entry:
            return Judged(Security.BOGUS, f"{label}: no key matches the DS ({tags})")
        try:
            dns.dnssec.validate(keys, sigs, {zone: dns.rrset.from_rdata_list(zone, keys.ttl,
                                                                            entry)},
                                now=self.clock())
        except dns.exception.ValidationFailure as exc:
            return Judged(Security.BOGUS, f"{label}: not signed by the key matching the DS "
                                          f"({tags}): {time_problem(sigs, self.clock()) or exc}")
        usable = dns.rrset.from_rdata_list(zone, keys.ttl, [
            k for k in keys if isinstance(k, DNSKEY) and usable_key(k)])
        return Judged(Security.SECURE, keys=usable)
