"""In-process DNSSEC validation from configured trust anchors, for hosts without a validator.

The resolver is asked with DO and CD set (so a validating one hands over even bogus data) and
trusted for nothing: every answer RRset is checked against its signer zone's DNSKEY RRset,
which is checked against a DS from the parent (validated the same way), up to a configured
anchor. An unsigned answer is ``insecure`` only where a validated NSEC proves a delegation
without DS; a negative answer is secure only with validated NSEC records that deny the
name/type (including wildcard proofs). NSEC3 denials are not implemented: they yield
``unreachable`` with that reason, never a conclusion. Zones whose DS records use only
algorithms or digests we cannot check are insecure (RFC 4035 §5.2). DS and DNSKEY results are
cached for the life of the ``Validator`` (one discovery run).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset
import dns.zonefile
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS

from oeagent.errors import OeagentError
from oeagent.resolver import Answer, Resolver, Security, classify

T = dns.rdatatype.RdataType
ALGORITHMS = frozenset({8, 10, 13, 14, 15, 16})
"""RSA/SHA-256, RSA/SHA-512, ECDSA P-256/P-384, Ed25519, Ed448: what dnspython checks."""
DIGESTS = frozenset({1, 2, 4})
_ZONE_FLAG, _REVOKE_FLAG = 0x0100, 0x0080
Anchors = dict[dns.name.Name, list[dns.rrset.RRset]]


def load_anchors(path: Path) -> Anchors:
    """DS and/or DNSKEY records in zone-file syntax (owner names absolute or under the root)."""
    try:
        rrsets = dns.zonefile.read_rrsets(path.read_text(encoding="utf-8"),
                                          origin=dns.name.root, relativize=False,
                                          rdclass=None, default_ttl=3600)
    except (OSError, UnicodeDecodeError, dns.exception.DNSException) as exc:
        raise OeagentError(f"cannot read trust anchors from {path}: {exc}") from None
    anchors: Anchors = {}
    for rrset in rrsets:
        if rrset.rdtype in (T.DS, T.DNSKEY):
            anchors.setdefault(rrset.name, []).append(rrset)
    if not anchors:
        raise OeagentError(f"{path} holds no DS or DNSKEY record")
    return anchors


@dataclass
class _Judged:
    security: Security
    reason: str = ""
    answer: Answer | None = None
    nsecs: list[dns.rrset.RRset] = field(default_factory=list)
    keys: dns.rrset.RRset | None = None
    not_a_zone: bool = False
    """A validated denial says this name has no DS and is no delegation point."""


def _types(rrset: dns.rrset.RRset) -> set[int]:
    found: set[int] = set()
    rdata = rrset[0]
    assert isinstance(rdata, dns.rdtypes.ANY.NSEC.NSEC)
    for window, bitmap in rdata.windows:
        for i, byte in enumerate(bitmap):
            found.update(window * 256 + i * 8 + b for b in range(8) if byte & (0x80 >> b))
    return found


def _chain(reply: dns.message.Message, qname: dns.name.Name, qtype: T
           ) -> list[dns.rrset.RRset]:
    """The CNAMEs from ``qname`` and the final RRset of ``qtype``, as a stub follows them."""
    chain: list[dns.rrset.RRset] = []
    target = qname
    for _ in range(8):
        rrset = reply.get_rrset(reply.answer, target, dns.rdataclass.IN, qtype)
        if rrset is not None:
            return [*chain, rrset]
        cname = reply.get_rrset(reply.answer, target, dns.rdataclass.IN, T.CNAME)
        if cname is None:
            break
        chain.append(cname)
        target = dns.name.Name(cname[0].target.labels)
    return chain


def _parent_side(name: dns.name.Name, ds: bool) -> dns.name.Name:
    """Where data at ``name`` lives for trust-anchor purposes: a DS lives in the parent."""
    return name.parent() if ds and name != dns.name.root else name


def _time_problem(sigs: dns.rrset.RRset, now: float) -> str:
    """Why the RRSIGs fail on time alone (all of them expired / not yet valid), or ""."""
    def at(t: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    if all(s.expiration < now for s in sigs):
        return f"RRSIG expired at {at(max(s.expiration for s in sigs))}"
    if all(s.inception > now for s in sigs):
        return f"RRSIG not valid before {at(min(s.inception for s in sigs))}"
    return ""


def _next(nsec: dns.rrset.RRset) -> dns.name.Name:
    rdata = nsec[0]
    assert isinstance(rdata, dns.rdtypes.ANY.NSEC.NSEC)
    return dns.name.Name(rdata.next.labels)


def _covers(nsec: dns.rrset.RRset, name: dns.name.Name, zone: dns.name.Name) -> bool:
    """``nsec`` proves no name exists strictly between its owner and next (canonical order)."""
    owner, nxt = nsec.name, _next(nsec)
    types = _types(nsec)
    if name.is_subdomain(owner) and name != owner and (
            (T.NS in types and T.SOA not in types) or T.DNAME in types):
        return False  # names below a delegation or DNAME are not this zone's to deny
    if owner < nxt:
        return bool(owner < name < nxt)
    return bool(name > owner or name < nxt) and name.is_subdomain(zone)  # the last NSEC


def denial(qname: dns.name.Name, qtype: int, nsecs: list[dns.rrset.RRset],
           zone: dns.name.Name) -> str | None:
    """"nodata" or "nxdomain" when validated ``nsecs`` of ``zone`` deny (qname, qtype)."""
    def no_type(nsec: dns.rrset.RRset) -> bool:
        types = _types(nsec)
        parent_side = T.NS in types and T.SOA not in types and nsec.name != zone
        return (qtype not in types and T.CNAME not in types
                and (qtype == T.DS or not parent_side))

    for nsec in nsecs:
        if nsec.name == qname:
            return "nodata" if no_type(nsec) else None
    covering = [n for n in nsecs if _covers(n, qname, zone)]
    if not covering:
        return None
    nsec = covering[0]
    nxt = _next(nsec)
    if nxt.is_subdomain(qname) and nxt != qname:
        return "nodata"  # an empty non-terminal: names exist below it
    common = max(qname.fullcompare(nsec.name)[2], qname.fullcompare(nxt)[2])
    encloser = qname.split(max(common, len(zone)))[1]
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if any(_covers(n, wildcard, zone) for n in nsecs):
        return "nxdomain"
    if any(n.name == wildcard and no_type(n) for n in nsecs):
        return "nodata"  # wildcard NODATA (RFC 4035 §3.1.3.4)
    return None


class Validator:
    def __init__(self, resolver: Resolver, anchors: Anchors,
                 clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.anchors = anchors
        self.clock = clock
        self._cache: dict[tuple[dns.name.Name, int], _Judged] = {}
        self._keys: dict[dns.name.Name, _Judged] = {}
        self._lock = threading.Lock()

    def query(self, name: dns.name.Name | str, rdtype: str) -> Answer:
        """Like ``resolver.query``, with the security decided here instead of by the AD bit."""
        qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        judged = self._judge(qname, dns.rdatatype.from_text(rdtype))
        assert judged.answer is not None
        a = judged.answer
        return Answer(a.name, a.rdtype, judged.security, a.rrset, a.nxdomain,
                      judged.reason or a.reason)

    def exchange(self, qname: dns.name.Name, qtype: T) -> dns.message.Message:
        """Ask the resolver with RD, DO and CD (the one network call; tests replace it)."""
        request = dns.message.make_query(qname, qtype, want_dnssec=True, payload=1232)
        request.flags |= dns.flags.RD | dns.flags.CD
        r = self.resolver
        reply, _ = dns.query.udp_with_fallback(request, r.address, port=r.port,
                                               timeout=r.timeout)
        return reply

    # -- one RRset -------------------------------------------------------------------------

    def _judge(self, qname: dns.name.Name, qtype: T) -> _Judged:
        cacheable = qtype == T.DS  # validated DNSKEY RRsets are cached by _dnskeys
        if cacheable:
            with self._lock:
                if (qname, qtype) in self._cache:
                    return self._cache[(qname, qtype)]
        judged = self._judge_uncached(qname, qtype)
        if cacheable:
            with self._lock:
                self._cache[(qname, qtype)] = judged
        return judged

    def _judge_uncached(self, qname: dns.name.Name, qtype: T) -> _Judged:
        label = f"{dns.rdatatype.to_text(qtype)} {qname}"
        try:
            reply = self.exchange(qname, qtype)
        except dns.exception.Timeout:
            return self._fail(qname, qtype, Security.UNREACHABLE, f"{label}: resolver timed out")
        except (OSError, dns.exception.DNSException) as exc:
            return self._fail(qname, qtype, Security.UNREACHABLE, f"{label}: {exc}")
        answer = classify(reply, qname, qtype, ad_trusted=False)
        if answer.security is not Security.INSECURE:  # SERVFAIL etc.: not a DNSSEC verdict
            return _Judged(Security.UNREACHABLE if answer.security is Security.BOGUS
                           else answer.security, answer.reason, answer)
        judged = _Judged(Security.SECURE, "", answer)
        chain = _chain(reply, qname, qtype)  # only these RRsets; anything else is ignored
        for rrset in chain:
            verdict = self._verify(rrset, reply, label)
            if verdict.security is not Security.SECURE:
                return dataclasses.replace(verdict, answer=answer)  # verdicts may be cached
        if answer.rrset is None:
            target = chain[-1][0].target if chain and chain[-1].rdtype == T.CNAME else qname
            cuts = [r.name for r in reply.authority if r.rdtype == T.NS]
            if cuts and not any(r.rdtype == T.SOA for r in reply.authority):
                return self._fail(qname, qtype, Security.UNREACHABLE,
                                  f"{label}: referral to {cuts[0]} (the resolver does not "
                                  "recurse)")
            verdict = self._verify_denial(target, qtype, reply, label)
            return dataclasses.replace(verdict, answer=answer)
        return judged

    def _fail(self, qname: dns.name.Name, qtype: T, security: Security, reason: str) -> _Judged:
        return _Judged(security, reason, Answer(qname, qtype, security, None, reason=reason))

    def _sigs(self, reply: dns.message.Message, section: list[dns.rrset.RRset],
              rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
        return reply.get_rrset(section, rrset.name, dns.rdataclass.IN, T.RRSIG, rrset.rdtype)

    def _verify(self, rrset: dns.rrset.RRset, reply: dns.message.Message, label: str,
                section: list[dns.rrset.RRset] | None = None) -> _Judged:
        what = f"{dns.rdatatype.to_text(rrset.rdtype)} {rrset.name}"
        sigs = self._sigs(reply, reply.answer if section is None else section, rrset)
        if not sigs:
            exclude = rrset.rdtype == T.DS
            return self._unsigned(rrset.name, exclude, f"{label}: {what} is unsigned")
        signer = sigs[0].signer
        anchor = self._anchor_for(_parent_side(rrset.name, rrset.rdtype == T.DS))
        if anchor is not None and not signer.is_subdomain(anchor):
            # A signer above the anchor would make anchored data merely "insecure".
            return _Judged(Security.BOGUS, f"{label}: {what} is signed by {signer}, outside "
                                           f"the trust anchor {anchor}")
        if not rrset.name.is_subdomain(signer) or any(s.signer != signer for s in sigs) or (
                rrset.rdtype == T.DS and rrset.name == signer):
            return _Judged(Security.BOGUS, f"{label}: {what} has RRSIGs by unexpected signers")
        keys = self._zone_keys(signer)
        if keys.security is not Security.SECURE:
            return keys
        assert keys.keys is not None
        try:
            dns.dnssec.validate(rrset, sigs, {signer: keys.keys}, now=self.clock())
        except dns.exception.ValidationFailure as exc:
            tags = ", ".join(str(s.key_tag) for s in sigs)
            return _Judged(Security.BOGUS, f"{label}: {what} RRSIG (key tag {tags}, signer "
                                           f"{signer}) does not validate: "
                                           f"{_time_problem(sigs, self.clock()) or exc}")
        rrset.update_ttl(min(s.original_ttl for s in sigs))
        if all(s.labels < len(rrset.name) - 1 for s in sigs) and not rrset.name.is_wild():
            if rrset.rdtype == T.NSEC:
                return _Judged(Security.BOGUS, f"{label}: {what} claims wildcard expansion")
            # Synthesized from a wildcard: the exact name must be proven not to exist.
            nsecs = self._valid_nsecs(reply, signer)
            if isinstance(nsecs, _Judged):
                return nsecs
            if not any(_covers(n, rrset.name, signer) for n in nsecs):
                return _Judged(Security.BOGUS, f"{label}: {what} is a wildcard expansion "
                                               "without NSEC proof that the name is absent")
        return _Judged(Security.SECURE)

    def _valid_nsecs(self, reply: dns.message.Message, zone: dns.name.Name
                     ) -> list[dns.rrset.RRset] | _Judged:
        """The authority section's NSEC RRsets, all signed by ``zone`` and validated."""
        nsecs = [r for r in reply.authority if r.rdtype == T.NSEC]
        for nsec in nsecs:
            sigs = self._sigs(reply, reply.authority, nsec)
            if not sigs or any(s.signer != zone for s in sigs) or not nsec.name.is_subdomain(
                    zone):
                return _Judged(Security.BOGUS, f"NSEC {nsec.name}: not signed by {zone}")
            verdict = self._verify(nsec, reply, f"NSEC {nsec.name}", reply.authority)
            if verdict.security is not Security.SECURE:
                return verdict
        return nsecs

    def _verify_denial(self, qname: dns.name.Name, qtype: T, reply: dns.message.Message,
                       label: str) -> _Judged:
        if any(r.rdtype == T.NSEC3 for r in reply.authority):
            return _Judged(Security.UNREACHABLE, f"{label}: the zone denies with NSEC3, which "
                                                 "in-process validation does not support")
        signers = {s.signer for r in reply.authority
                   if r.rdtype == T.RRSIG and r.covers == T.NSEC for s in r}
        if not signers:  # no (signed) NSEC: only a proven insecure zone excuses that
            return self._unsigned(qname, qtype == T.DS, f"{label}: denial without signed NSEC")
        zone = min(signers, key=len)
        if len(signers) != 1 or not qname.is_subdomain(zone) or (
                qtype == T.DS and qname == zone):  # a DS is denied by the parent only
            return _Judged(Security.BOGUS, f"{label}: NSEC records signed by "
                                           f"{', '.join(map(str, signers))} cannot deny it")
        nsecs = self._valid_nsecs(reply, zone)
        if isinstance(nsecs, _Judged):
            return nsecs
        kind = denial(qname, qtype, nsecs, zone)
        if kind is None:
            return _Judged(Security.BOGUS, f"{label}: the NSEC records do not prove the denial")
        return _Judged(Security.SECURE, f"{label}: {kind} (validated NSEC)", nsecs=nsecs)

    # -- zones -----------------------------------------------------------------------------

    def _anchor_for(self, name: dns.name.Name) -> dns.name.Name | None:
        found = [a for a in self.anchors if name.is_subdomain(a)]
        return max(found, key=len) if found else None

    def _zone_keys(self, zone: dns.name.Name) -> _Judged:
        """The zone's validated DNSKEY RRset, or why it is insecure/bogus/unreachable."""
        anchor = self._anchor_for(zone)
        if anchor is None:
            return _Judged(Security.INSECURE, f"no trust anchor covers {zone}")
        if zone in self.anchors:
            trusted = self.anchors[zone]
        else:
            ds = self._judge(zone, T.DS)
            if ds.security is not Security.SECURE:
                return ds
            if ds.answer is None or ds.answer.rrset is None:
                exact = [n for n in ds.nsecs if n.name == zone and T.NS in _types(n)]
                if exact:
                    return _Judged(Security.INSECURE, f"{zone} is an insecure delegation "
                                                      "(no DS, proven by a validated NSEC)")
                return _Judged(Security.BOGUS, f"{zone}: signed data from a zone whose "
                                               "delegation is denied", not_a_zone=True)
            trusted = [ds.answer.rrset]
        return self._dnskeys(zone, trusted)

    def _dnskeys(self, zone: dns.name.Name, trusted: list[dns.rrset.RRset]) -> _Judged:
        cached = self._keys.get(zone)
        if cached is not None:
            return cached
        ds = [d for r in trusted for d in r
              if isinstance(d, DS) and d.algorithm in ALGORITHMS and d.digest_type in DIGESTS]
        anchored_keys = [k for r in trusted for k in r
                         if isinstance(k, DNSKEY) and k.algorithm in ALGORITHMS]
        if not ds and not anchored_keys:
            algs = sorted({int(d.algorithm) for r in trusted for d in r})
            result = _Judged(Security.INSECURE, f"{zone}: DS/anchor algorithms {algs} are not "
                                                "supported; treated as insecure (RFC 4035 §5.2)")
        else:
            result = self._check_dnskeys(zone, ds, anchored_keys)
        with self._lock:
            self._keys[zone] = result
        return result

    def _check_dnskeys(self, zone: dns.name.Name, ds: list[DS],
                       anchored: list[DNSKEY]) -> _Judged:
        label = f"DNSKEY {zone}"
        try:
            reply = self.exchange(zone, T.DNSKEY)
        except (OSError, dns.exception.DNSException) as exc:
            return _Judged(Security.UNREACHABLE, f"{label}: {exc or 'timed out'}")
        if reply.rcode() != dns.rcode.NOERROR:
            return _Judged(Security.UNREACHABLE, f"{label}: {dns.rcode.to_text(reply.rcode())}")
        keys = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.DNSKEY)
        sigs = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.RRSIG, T.DNSKEY)
        if keys is None or sigs is None:
            return _Judged(Security.BOGUS, f"{label}: no signed DNSKEY RRset")
        entry = [k for k in keys if isinstance(k, DNSKEY) and k.flags & _ZONE_FLAG
                 and not k.flags & _REVOKE_FLAG
                 and (k in anchored or any(self._matches(zone, k, d) for d in ds))]
        tags = ", ".join(str(d.key_tag) for d in ds) or "anchored DNSKEY"
        if not entry:
            return _Judged(Security.BOGUS, f"{label}: no key matches the DS ({tags})")
        try:
            dns.dnssec.validate(keys, sigs, {zone: dns.rrset.from_rdata_list(zone, keys.ttl,
                                                                            entry)},
                                now=self.clock())
        except dns.exception.ValidationFailure as exc:
            return _Judged(Security.BOGUS, f"{label}: not signed by the key matching the DS "
                                           f"({tags}): {_time_problem(sigs, self.clock()) or exc}")
        usable = dns.rrset.from_rdata_list(zone, keys.ttl, [
            k for k in keys if k.flags & _ZONE_FLAG and not k.flags & _REVOKE_FLAG])
        return _Judged(Security.SECURE, keys=usable)

    @staticmethod
    def _matches(zone: dns.name.Name, key: DNSKEY, ds: DS) -> bool:
        if key.algorithm != ds.algorithm or dns.dnssec.key_id(key) != ds.key_tag:
            return False
        try:
            made = dns.dnssec.make_ds(zone, key, ds.digest_type,
                                      policy=dns.dnssec.allow_all_policy, validating=True)
        except (dns.exception.UnsupportedAlgorithm, dns.exception.DeniedByPolicy,
                ValueError):
            return False
        return bool(made == ds)

    def _unsigned(self, name: dns.name.Name, exclude: bool, why: str) -> _Judged:
        """Unsigned data at ``name``: insecure only under a proven insecure delegation (or
        outside every anchor); otherwise bogus. ``exclude``: ``name`` itself is not walked
        (a DS at ``name`` lives in the parent)."""
        anchor = self._anchor_for(_parent_side(name, exclude))
        if anchor is None:
            return _Judged(Security.INSECURE, f"{why}; no trust anchor covers {name}")
        top = self._zone_keys(anchor)
        if top.security is not Security.SECURE:
            return top
        last = len(name) - (1 if exclude else 0)
        for depth in range(len(anchor) + 1, last + 1):
            cut = name.split(depth)[1]
            keys = self._zone_keys(cut)
            if keys.security is Security.SECURE:
                continue
            if keys.security is Security.INSECURE:
                return _Judged(Security.INSECURE, f"{why}; {keys.reason}")
            if keys.not_a_zone:  # not a zone cut: keep walking down
                continue
            return keys
        return _Judged(Security.BOGUS, f"{why}, but it is inside a signed zone")
