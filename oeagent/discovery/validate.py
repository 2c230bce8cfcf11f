"""In-process DNSSEC validation from configured trust anchors, for hosts without a validator.

The resolver is asked with DO and CD set (so a validating one hands over even bogus data) and
trusted for nothing: every answer RRset is checked against its signer zone's DNSKEY RRset,
which is checked against a DS from the parent (validated the same way), up to a configured
anchor. An unsigned answer is ``insecure`` only where a validated NSEC or NSEC3 proves a
delegation without DS (an opt-out NSEC3 included); a negative answer is secure only with
validated NSEC (``nsec``) or NSEC3 (``nsec3``) records that deny the name/type, wildcard proofs
included. Zones whose DS records use only algorithms or digests we cannot check are insecure
(RFC 4035 §5.2), and so are NSEC3 denials with more iterations than we hash. DS and DNSKEY
results are cached for the life of the ``Validator`` (one discovery run).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS

from oeagent.discovery import nsec, nsec3
from oeagent.discovery.anchors import ALGORITHMS, DIGESTS, Anchors, ds_matches, usable_key
from oeagent.discovery.nsec import Proof
from oeagent.resolver import Answer, Reply, Resolver, Security, classify

T = dns.rdatatype.RdataType


@dataclass
class _Judged:
    security: Security
    reason: str = ""
    answer: Answer | None = None
    proof: Proof | None = None
    """What a validated denial proved."""
    keys: dns.rrset.RRset | None = None
    not_a_zone: bool = False
    """A validated denial says this name has no DS and is no delegation point."""


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
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return self._fail(qname, qtype, Security.UNREACHABLE, f"{label}: {exc}")
        answer = classify(Reply.from_message(reply), qname, qtype, ad_trusted=False)
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
            if rrset.rdtype in (T.NSEC, T.NSEC3):
                return _Judged(Security.BOGUS, f"{label}: {what} claims wildcard expansion")
            return self._check_expansion(rrset, min(s.labels for s in sigs), signer, reply,
                                         f"{label}: {what}")
        return _Judged(Security.SECURE)

    def _check_expansion(self, rrset: dns.rrset.RRset, labels: int, signer: dns.name.Name,
                         reply: dns.message.Message, what: str) -> _Judged:
        """Synthesized from a wildcard: the exact name must be proven not to exist (by an
        NSEC covering it, or an NSEC3 covering the next closer name, RFC 5155 §8.8)."""
        kind = T.NSEC3 if any(r.rdtype == T.NSEC3 for r in reply.authority) else T.NSEC
        denials = self._valid_denials(reply, signer, kind, what)
        if isinstance(denials, _Judged):
            return denials
        try:
            proven = (nsec3.proves_expansion(rrset.name, labels, denials, signer)
                      if kind == T.NSEC3 else nsec.proves_absent(rrset.name, denials, signer))
        except nsec3.Unverifiable as exc:
            return _Judged(Security.INSECURE, f"{what} is a wildcard expansion: {exc}")
        if not proven:
            return _Judged(Security.BOGUS, f"{what} is a wildcard expansion without "
                                           f"{dns.rdatatype.to_text(kind)} proof that the "
                                           "name is absent")
        return _Judged(Security.SECURE)

    def _valid_denials(self, reply: dns.message.Message, zone: dns.name.Name, kind: T,
                       label: str) -> list[dns.rrset.RRset] | _Judged:
        """The authority section's NSEC or NSEC3 RRsets, all signed by ``zone``, validated."""
        found = [r for r in reply.authority if r.rdtype == kind]
        for rrset in found:
            sigs = self._sigs(reply, reply.authority, rrset)
            if not sigs or any(s.signer != zone for s in sigs) or not rrset.name.is_subdomain(
                    zone):
                return _Judged(Security.BOGUS, f"{label}: {dns.rdatatype.to_text(kind)} "
                                               f"{rrset.name} is not signed by {zone}")
            verdict = self._verify(rrset, reply, label, reply.authority)
            if verdict.security is not Security.SECURE:
                return verdict
        return found

    def _verify_denial(self, qname: dns.name.Name, qtype: T, reply: dns.message.Message,
                       label: str) -> _Judged:
        # A zone uses one or the other; NSEC3 wins so that stray NSECs cannot mask it.
        kind = T.NSEC3 if any(r.rdtype == T.NSEC3 for r in reply.authority) else T.NSEC
        name = dns.rdatatype.to_text(kind)
        signers = {s.signer for r in reply.authority
                   if r.rdtype == T.RRSIG and r.covers == kind for s in r}
        if not signers:  # no (signed) NSEC/NSEC3: only a proven insecure zone excuses that
            return self._unsigned(qname, qtype == T.DS, f"{label}: denial without signed "
                                                        f"{name}")
        zone = min(signers, key=len)
        if len(signers) != 1 or not qname.is_subdomain(zone) or (
                qtype == T.DS and qname == zone):  # a DS is denied by the parent only
            return _Judged(Security.BOGUS, f"{label}: {name} records signed by "
                                           f"{', '.join(map(str, signers))} cannot deny it")
        denials = self._valid_denials(reply, zone, kind, label)
        if isinstance(denials, _Judged):
            return denials
        if kind == T.NSEC:
            proof = nsec.denial(qname, qtype, denials, zone)
            if proof is None:
                return _Judged(Security.BOGUS, f"{label}: the NSEC records do not prove the "
                                               "denial")
        else:
            try:
                proof = nsec3.denial(qname, qtype, denials, zone)
            except nsec3.Unverifiable as exc:
                return _Judged(Security.INSECURE, f"{label}: {exc}; treated as insecure")
            except nsec3.Unproven as exc:
                return _Judged(Security.BOGUS, f"{label}: the NSEC3 records do not prove the "
                                               f"denial: {exc}")
            if proof is Proof.OPT_OUT:  # no signed name there, but maybe an unsigned child
                why = ("an insecure delegation, if it exists (RFC 5155 §8.6)" if qtype == T.DS
                       else "no signed name there, but it may be an unsigned delegation "
                            "(RFC 5155 §6)")
                return _Judged(Security.INSECURE, f"{label}: only an opt-out NSEC3 covers it: "
                                                  f"{why}", proof=proof)
        return _Judged(Security.SECURE, f"{label}: {proof.value} (validated {name})",
                       proof=proof)

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
                if ds.proof is Proof.DELEGATION:
                    return _Judged(Security.INSECURE, f"{zone} is an insecure delegation "
                                                      f"(no DS: {ds.reason})")
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
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return _Judged(Security.UNREACHABLE, f"{label}: {exc or 'timed out'}")
        if reply.rcode() != dns.rcode.NOERROR:
            return _Judged(Security.UNREACHABLE, f"{label}: {dns.rcode.to_text(reply.rcode())}")
        keys = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.DNSKEY)
        sigs = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, T.RRSIG, T.DNSKEY)
        if keys is None or sigs is None:
            return _Judged(Security.BOGUS, f"{label}: no signed DNSKEY RRset")
        entry = [k for k in keys if isinstance(k, DNSKEY) and usable_key(k)
                 and (k in anchored or any(ds_matches(zone, k, d) for d in ds))]
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
            k for k in keys if isinstance(k, DNSKEY) and usable_key(k)])
        return _Judged(Security.SECURE, keys=usable)

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
