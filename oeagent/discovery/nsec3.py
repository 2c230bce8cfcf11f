"""What validated NSEC3 records (RFC 5155 §8) prove about a name that has no answer.

NSEC3 denies hashed names, so every proof about a name that does not exist goes through its
closest encloser: the longest existing ancestor (an NSEC3 matches its hash), the "next
closer" name one label below it (an NSEC3 covers its hash), and the wildcard at the closest
encloser (covered: NXDOMAIN; matched without the type: wildcard NODATA). Pure functions over
RRsets whose signatures the caller (``validate``) has already checked, speaking ``nsec``'s
``Proof`` vocabulary.

Choices, each where the RFCs leave room:

- Iterations above ``MAX_ITERATIONS`` (150: unbound's default limit, and BIND's; RFC 9276
  §3.2 lets a validator treat any count above 0 as insecure) are not hashed:
  ``Unverifiable``, which the validator reports as insecure with the reason. Matching the
  common validators means a zone works here exactly when it works behind them, while the
  hashing a hostile zone can make us do per answer stays bounded. The cap applies to every
  proof, the opt-out one for unsigned delegations included.
- Unknown hash algorithms and flags other than 0/1 are ignored (RFC 5155 §8.1, §8.2), so a
  denial that rests on them fails to prove anything (bogus), with the reason.
- An opt-out NSEC3 covering the next closer name proves only that no *signed* name is there:
  the name may be (below) an unsigned delegation. That is ``OPT_OUT`` (insecure), the proof
  RFC 5155 §8.6 asks for to accept a delegation without DS, and never an authenticated
  NXDOMAIN or NODATA (unbound decides the same).
"""

from __future__ import annotations

import base64
import binascii

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.NSEC3
import dns.rrset

from oeagent.discovery.nsec import Proof, cuts_off, no_type, types

T = dns.rdatatype.RdataType
MAX_ITERATIONS = 150
_SHA1, _SHA1_LEN = 1, 20
_OPT_OUT = 0x01


class Unproven(Exception):
    """The NSEC3 records do not prove the denial; the message says why."""


class Unverifiable(Unproven):
    """The proof would need more hashing than ``MAX_ITERATIONS`` allows: no conclusion."""


class _Record:
    """One usable NSEC3: its hashed owner and next name as bytes, its parameters and types."""

    def __init__(self, owner: bytes, rdata: dns.rdtypes.ANY.NSEC3.NSEC3) -> None:
        self.owner, self.next = owner, bytes(rdata.next)
        self.params = (int(rdata.algorithm), bytes(rdata.salt), int(rdata.iterations))
        self.opt_out = bool(rdata.flags & _OPT_OUT)
        self.types = types(rdata)

    def covers(self, hashed: bytes) -> bool:
        if self.owner < self.next:
            return self.owner < hashed < self.next
        return hashed > self.owner or hashed < self.next  # the last one wraps around


class _Chain:
    """The usable NSEC3 records of one zone, with their hashes of names computed once."""

    def __init__(self, nsec3s: list[dns.rrset.RRset], zone: dns.name.Name) -> None:
        self.zone = zone
        self.records: list[_Record] = []
        self.ignored: list[str] = []
        self._hashes: dict[tuple[dns.name.Name, tuple[int, bytes, int]], bytes] = {}
        for rrset in nsec3s:
            owner = _owner_hash(rrset.name, zone)
            for rdata in rrset:
                assert isinstance(rdata, dns.rdtypes.ANY.NSEC3.NSEC3)
                if rdata.algorithm != _SHA1:
                    self.ignored.append(f"{rrset.name} (unknown hash algorithm "
                                        f"{rdata.algorithm}, RFC 5155 §8.1)")
                elif rdata.flags & ~_OPT_OUT:
                    self.ignored.append(f"{rrset.name} (flags {rdata.flags}, RFC 5155 §8.2)")
                elif rdata.iterations > MAX_ITERATIONS:
                    raise Unverifiable(f"NSEC3 {rrset.name} uses {rdata.iterations} hash "
                                       f"iterations, above the {MAX_ITERATIONS} this "
                                       "validator computes (RFC 9276 §3.2)")
                elif len(rdata.next) != _SHA1_LEN:
                    raise Unproven(f"NSEC3 {rrset.name}: next hashed owner of "
                                   f"{len(rdata.next)} bytes, not a SHA-1 hash")
                else:
                    self.records.append(_Record(owner, rdata))
        if not self.records:
            ignored = f" (ignored: {'; '.join(self.ignored)})" if self.ignored else ""
            raise Unproven(f"no usable NSEC3 record{ignored}")

    def _hash(self, name: dns.name.Name, params: tuple[int, bytes, int]) -> bytes:
        key = (name, params)
        if key not in self._hashes:
            algorithm, salt, iterations = params
            self._hashes[key] = base64.b32hexdecode(
                dns.dnssec.nsec3_hash(name, salt, iterations, algorithm))
        return self._hashes[key]

    def matching(self, name: dns.name.Name) -> _Record | None:
        return next((r for r in self.records if r.owner == self._hash(name, r.params)), None)

    def covering(self, name: dns.name.Name) -> _Record | None:
        return next((r for r in self.records if r.covers(self._hash(name, r.params))), None)

    def why_not(self) -> str:
        return f"; ignored: {'; '.join(self.ignored)}" if self.ignored else ""


def _owner_hash(owner: dns.name.Name, zone: dns.name.Name) -> bytes:
    """The hash an NSEC3 owner name stands for; it must sit exactly one label below the zone
    (RFC 5155 §8.2: anything else is not from this zone's chain)."""
    if len(owner) != len(zone) + 1 or not owner.is_subdomain(zone):
        raise Unproven(f"NSEC3 {owner} is not one label below {zone}")
    try:
        hashed = base64.b32hexdecode(owner.labels[0].upper())
    except (binascii.Error, ValueError):
        raise Unproven(f"NSEC3 {owner}: the owner's first label is not base32hex") from None
    if len(hashed) != _SHA1_LEN:
        raise Unproven(f"NSEC3 {owner}: the owner is not a SHA-1 hash")
    return hashed


def _closest_encloser(chain: _Chain, qname: dns.name.Name
                      ) -> tuple[dns.name.Name, _Record]:
    """RFC 5155 §8.3: the closest encloser of ``qname`` (a proper ancestor an NSEC3 matches)
    and the NSEC3 covering the next closer name; raises ``Unproven`` when either is missing."""
    for depth in range(len(qname) - 1, len(chain.zone) - 1, -1):
        encloser = qname.split(depth)[1]
        record = chain.matching(encloser)
        if record is None:
            continue
        if cuts_off(record.types, encloser == chain.zone):
            raise Unproven(f"the closest encloser {encloser} is a delegation or DNAME: "
                           "names below it are not this zone's to deny")
        next_closer = qname.split(depth + 1)[1]
        cover = chain.covering(next_closer)
        if cover is None:
            raise Unproven(f"no NSEC3 covers the next closer name {next_closer} "
                           f"(closest encloser {encloser}){chain.why_not()}")
        return encloser, cover
    raise Unproven(f"no NSEC3 matches an ancestor of {qname}: no closest encloser"
                   f"{chain.why_not()}")


def denial(qname: dns.name.Name, qtype: T, nsec3s: list[dns.rrset.RRset],
           zone: dns.name.Name) -> Proof:
    """What validated ``nsec3s`` of ``zone`` prove about (qname, qtype) (RFC 5155 §8.4 to §8.7);
    raises ``Unproven`` (the reason) or ``Unverifiable`` (iterations over the cap)."""
    chain = _Chain(nsec3s, zone)
    qtext = dns.rdatatype.to_text(qtype)
    match = chain.matching(qname)
    if match is not None:  # NODATA (§8.5), DS NODATA (§8.6), or an empty non-terminal
        if not no_type(match.types, qtype, qname == zone):
            raise Unproven(f"the NSEC3 matching {qname} does not deny {qtext} (it lists the "
                           "type or CNAME, or is the parent side of a delegation)")
        if qtype == T.DS and T.NS in match.types:
            return Proof.DELEGATION  # §8.9: NS without DS (no_type ruled out SOA and DS)
        return Proof.NODATA
    encloser, cover = _closest_encloser(chain, qname)
    if cover.opt_out:
        return Proof.OPT_OUT  # §8.6 for DS; for any other type nothing is proven (insecure)
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if chain.covering(wildcard) is not None:
        return Proof.NXDOMAIN  # §8.4
    star = chain.matching(wildcard)
    if star is not None and no_type(star.types, qtype, False):
        return Proof.NODATA  # wildcard NODATA, §8.7
    if star is not None:
        raise Unproven(f"the wildcard {wildcard} exists with {qtext} or CNAME")
    raise Unproven(f"no NSEC3 covers the wildcard {wildcard} at the closest encloser"
                   f"{chain.why_not()}")


def proves_expansion(qname: dns.name.Name, labels: int, nsec3s: list[dns.rrset.RRset],
                     zone: dns.name.Name) -> bool:
    """RFC 5155 §8.8: an answer synthesized from the wildcard at the closest encloser (the
    RRSIG's ``labels`` say which) needs an NSEC3 covering the next closer name, or the
    exact name might exist with other data. Raises ``Unverifiable`` like ``denial``."""
    if labels + 1 >= len(qname):
        return False
    try:
        return _Chain(nsec3s, zone).covering(qname.split(labels + 2)[1]) is not None
    except Unverifiable:
        raise
    except Unproven:
        return False
