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

This module judges the RRsets of one reply: the answer and its CNAMEs, wildcard expansions and
denials. Which keys may sign them, and whether unsigned data is excused, is the chain of trust
in ``zonekeys``; the verdict both speak is ``verdict.Judged``. ``exchange`` stays here, as the
validator's one network call, so that tests replace it in one place for both halves.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from oeagent.discovery import nsec, nsec3
from oeagent.discovery.anchors import Anchors
from oeagent.discovery.nsec import Proof
from oeagent.discovery.verdict import Judged, time_problem
from oeagent.discovery.zonekeys import ZoneKeys, parent_side
from oeagent.resolver import Answer, Reply, Resolver, Security, classify

T = dns.rdatatype.RdataType


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


class Validator:
    def __init__(self, resolver: Resolver, anchors: Anchors,
                 clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.anchors = anchors
        self.clock = clock
        self._cache: dict[tuple[dns.name.Name, int], Judged] = {}
        self._lock = threading.Lock()
        # Late-bound through lambdas, not bound methods or values taken now: an ``exchange``
        # or ``clock`` replaced on the class or the instance later must reach the key walk too.
        self.zone_keys = ZoneKeys(anchors, lambda: self.clock(),
                                  lambda n, t: self._judge(n, t),
                                  lambda n, t: self.exchange(n, t))

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

    def _judge(self, qname: dns.name.Name, qtype: T) -> Judged:
        cacheable = qtype == T.DS  # validated DNSKEY RRsets are cached by ZoneKeys
        if cacheable:
            with self._lock:
                if (qname, qtype) in self._cache:
                    return self._cache[(qname, qtype)]
        judged = self._judge_uncached(qname, qtype)
        if cacheable:
            with self._lock:
                self._cache[(qname, qtype)] = judged
        return judged

    def _judge_uncached(self, qname: dns.name.Name, qtype: T) -> Judged:
        label = f"{dns.rdatatype.to_text(qtype)} {qname}"
        try:
            reply = self.exchange(qname, qtype)
        except dns.exception.Timeout:
            return self._fail(qname, qtype, Security.UNREACHABLE, f"{label}: resolver timed out")
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return self._fail(qname, qtype, Security.UNREACHABLE, f"{label}: {exc}")
        answer = classify(Reply.from_message(reply), qname, qtype, ad_trusted=False)
        if answer.security is not Security.INSECURE:  # SERVFAIL etc.: not a DNSSEC verdict
            return Judged(Security.UNREACHABLE if answer.security is Security.BOGUS
                          else answer.security, answer.reason, answer)
        judged = Judged(Security.SECURE, "", answer)
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

    def _fail(self, qname: dns.name.Name, qtype: T, security: Security, reason: str) -> Judged:
        return Judged(security, reason, Answer(qname, qtype, security, None, reason=reason))

    def _sigs(self, reply: dns.message.Message, section: list[dns.rrset.RRset],
              rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
        return reply.get_rrset(section, rrset.name, dns.rdataclass.IN, T.RRSIG, rrset.rdtype)

    def _verify(self, rrset: dns.rrset.RRset, reply: dns.message.Message, label: str,
                section: list[dns.rrset.RRset] | None = None) -> Judged:
        what = f"{dns.rdatatype.to_text(rrset.rdtype)} {rrset.name}"
        sigs = self._sigs(reply, reply.answer if section is None else section, rrset)
        if not sigs:
            exclude = rrset.rdtype == T.DS
            return self.zone_keys.unsigned(rrset.name, exclude, f"{label}: {what} is unsigned")
        signer = sigs[0].signer
        anchor = self.zone_keys.anchor_for(parent_side(rrset.name, rrset.rdtype == T.DS))
        if anchor is not None and not signer.is_subdomain(anchor):
            # A signer above the anchor would make anchored data merely "insecure".
            return Judged(Security.BOGUS, f"{label}: {what} is signed by {signer}, outside "
                                          f"the trust anchor {anchor}")
        if not rrset.name.is_subdomain(signer) or any(s.signer != signer for s in sigs) or (
                rrset.rdtype == T.DS and rrset.name == signer):
            return Judged(Security.BOGUS, f"{label}: {what} has RRSIGs by unexpected signers")
        keys = self.zone_keys.keys(signer)
        if keys.security is not Security.SECURE:
            return keys
        assert keys.keys is not None
        try:
            dns.dnssec.validate(rrset, sigs, {signer: keys.keys}, now=self.clock())
        except dns.exception.ValidationFailure as exc:
            tags = ", ".join(str(s.key_tag) for s in sigs)
            return Judged(Security.BOGUS, f"{label}: {what} RRSIG (key tag {tags}, signer "
                                          f"{signer}) does not validate: "
                                          f"{time_problem(sigs, self.clock()) or exc}")
        rrset.update_ttl(min(s.original_ttl for s in sigs))
        if all(s.labels < len(rrset.name) - 1 for s in sigs) and not rrset.name.is_wild():
            if rrset.rdtype in (T.NSEC, T.NSEC3):
                return Judged(Security.BOGUS, f"{label}: {what} claims wildcard expansion")
            return self._check_expansion(rrset, min(s.labels for s in sigs), signer, reply,
                                         f"{label}: {what}")
        return Judged(Security.SECURE)

    def _check_expansion(self, rrset: dns.rrset.RRset, labels: int, signer: dns.name.Name,
                         reply: dns.message.Message, what: str) -> Judged:
        """Synthesized from a wildcard: the exact name must be proven not to exist (by an
        NSEC covering it, or an NSEC3 covering the next closer name, RFC 5155 §8.8)."""
        kind = T.NSEC3 if any(r.rdtype == T.NSEC3 for r in reply.authority) else T.NSEC
        denials = self._valid_denials(reply, signer, kind, what)
        if isinstance(denials, Judged):
            return denials
        try:
            proven = (nsec3.proves_expansion(rrset.name, labels, denials, signer)
                      if kind == T.NSEC3 else nsec.proves_absent(rrset.name, denials, signer))
        except nsec3.Unverifiable as exc:
            return Judged(Security.INSECURE, f"{what} is a wildcard expansion: {exc}")
        if not proven:
            return Judged(Security.BOGUS, f"{what} is a wildcard expansion without "
                                          f"{dns.rdatatype.to_text(kind)} proof that the "
                                          "name is absent")
        return Judged(Security.SECURE)

    def _valid_denials(self, reply: dns.message.Message, zone: dns.name.Name, kind: T,
                       label: str) -> list[dns.rrset.RRset] | Judged:
        """The authority section's NSEC or NSEC3 RRsets, all signed by ``zone``, validated."""
        found = [r for r in reply.authority if r.rdtype == kind]
        for rrset in found:
            sigs = self._sigs(reply, reply.authority, rrset)
            if not sigs or any(s.signer != zone for s in sigs) or not rrset.name.is_subdomain(
                    zone):
                return Judged(Security.BOGUS, f"{label}: {dns.rdatatype.to_text(kind)} "
                                              f"{rrset.name} is not signed by {zone}")
            verdict = self._verify(rrset, reply, label, reply.authority)
            if verdict.security is not Security.SECURE:
                return verdict
        return found

    def _verify_denial(self, qname: dns.name.Name, qtype: T, reply: dns.message.Message,
                       label: str) -> Judged:
        # A zone uses one or the other; NSEC3 wins so that stray NSECs cannot mask it.
        kind = T.NSEC3 if any(r.rdtype == T.NSEC3 for r in reply.authority) else T.NSEC
        name = dns.rdatatype.to_text(kind)
        signers = {s.signer for r in reply.authority
                   if r.rdtype == T.RRSIG and r.covers == kind for s in r}
        if not signers:  # no (signed) NSEC/NSEC3: only a proven insecure zone excuses that
            return self.zone_keys.unsigned(qname, qtype == T.DS,
                                           f"{label}: denial without signed {name}")
        zone = min(signers, key=len)
        if len(signers) != 1 or not qname.is_subdomain(zone) or (
                qtype == T.DS and qname == zone):  # a DS is denied by the parent only
            return Judged(Security.BOGUS, f"{label}: {name} records signed by "
                                          f"{', '.join(map(str, signers))} cannot deny it")
        denials = self._valid_denials(reply, zone, kind, label)
        if isinstance(denials, Judged):
            return denials
        if kind == T.NSEC:
            proof = nsec.denial(qname, qtype, denials, zone)
            if proof is None:
                return Judged(Security.BOGUS, f"{label}: the NSEC records do not prove the "
                                              "denial")
        else:
            try:
                proof = nsec3.denial(qname, qtype, denials, zone)
            except nsec3.Unverifiable as exc:
                return Judged(Security.INSECURE, f"{label}: {exc}; treated as insecure")
            except nsec3.Unproven as exc:
                return Judged(Security.BOGUS, f"{label}: the NSEC3 records do not prove the "
                                              f"denial: {exc}")
            if proof is Proof.OPT_OUT:  # no signed name there, but maybe an unsigned child
                why = ("an insecure delegation, if it exists (RFC 5155 §8.6)" if qtype == T.DS
                       else "no signed name there, but it may be an unsigned delegation "
                            "(RFC 5155 §6)")
                return Judged(Security.INSECURE, f"{label}: only an opt-out NSEC3 covers it: "
                                                 f"{why}", proof=proof)
        return Judged(Security.SECURE, f"{label}: {proof.value} (validated {name})",
                      proof=proof)
