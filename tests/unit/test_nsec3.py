"""NSEC3 denial proofs (RFC 5155 §8): the pure proof logic, and the in-process validator
against an NSEC3 zone signed here (dnspython cannot sign with NSEC3, so the chain is built by
hand from dns.dnssec.nsec3_hash and each RRset signed with dns.dnssec.sign)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from oeagent.discovery import nsec3
from oeagent.discovery.nsec import Proof
from oeagent.discovery.validate import Validator
from oeagent.resolver import Resolver, Security

T = dns.rdatatype.RdataType
N = dns.name.from_text
NOW = time.time()
ORIGIN = N("n3.example.")
SIGNED = ("@ SOA ns.example. h.example. 1 60 60 60 60", "@ NS ns.example.",
          "www A 203.0.113.1", "*.wild TXT \"wild\"", "a.b TXT \"below an empty non-terminal\"")
INSECURE = "ins NS ns.example."  # a delegation without DS: its child is unsigned
Nodes = dict[dns.name.Name, list[dns.rrset.RRset]]


def _hash(name: dns.name.Name, salt: bytes, iterations: int) -> bytes:
    return base64.b32hexdecode(dns.dnssec.nsec3_hash(name, salt, iterations, 1))


def chain(nodes: Nodes, salt: bytes = b"", iterations: int = 0, opt_out: bool = False,
          algorithm: int = 1) -> list[dns.rrset.RRset]:
    """The zone's NSEC3 chain (RFC 5155 §7.1): every name, empty non-terminals included;
    with opt-out, delegations without DS get none."""
    names: dict[dns.name.Name, set[int]] = {}
    for name, rrsets in nodes.items():
        found = {r.rdtype for r in rrsets}
        if opt_out and T.NS in found and T.DS not in found and name != ORIGIN:
            continue
        unsigned = T.NS in found and T.DS not in found and name != ORIGIN
        names[name] = found if unsigned else found | {T.RRSIG}
        for depth in range(len(ORIGIN) + 1, len(name)):
            names.setdefault(name.split(depth)[1], set())  # empty non-terminals
    hashed = sorted((_hash(n, salt, iterations), found) for n, found in names.items())
    out = []
    for i, (owner, found) in enumerate(hashed):
        nxt = base64.b32hexencode(hashed[(i + 1) % len(hashed)][0]).decode()
        bitmap = " ".join(dns.rdatatype.to_text(t) for t in sorted(found))
        text = f"{algorithm} {int(opt_out)} {iterations} {salt.hex() or '-'} {nxt} {bitmap}"
        owner_name = dns.name.Name((base64.b32hexencode(owner).lower(), *ORIGIN.labels))
        out.append(dns.rrset.from_text(owner_name, 300, "IN", "NSEC3", text))
    return out


def _nodes(lines: tuple[str, ...]) -> Nodes:
    nodes: Nodes = {}
    for line in lines:
        owner, rdtype, rdata = line.split(" ", 2)
        name = dns.name.from_text(owner, ORIGIN)
        nodes.setdefault(name, []).append(dns.rrset.from_text(name, 300, "IN", rdtype, rdata))
    return nodes


class Nsec3Zone:
    """n3.example., anchored by its DNSKEY, answering like an authoritative server that
    serves the unsigned child ins.n3.example. too."""

    def __init__(self, salt: bytes = b"\xab\x12", iterations: int = 3,
                 opt_out: bool = False) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(self.private.public_key(), "ECDSAP256SHA256",
                                             flags=257)
        self.nodes = _nodes((*SIGNED, INSECURE))
        self.nodes[ORIGIN].append(dns.rrset.from_rdata(ORIGIN, 300, self.dnskey))
        self.nsec3 = chain(self.nodes, salt, iterations, opt_out)
        self.params = (salt, iterations)

    def anchors(self) -> dict[dns.name.Name, list[dns.rrset.RRset]]:
        return {ORIGIN: [dns.rrset.from_rdata(ORIGIN, 300, self.dnskey)]}

    def signed(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None
               ) -> list[dns.rrset.RRset]:
        sig = dns.dnssec.sign(rrset, self.private, ORIGIN, self.dnskey,
                              inception=NOW - 3600, expiration=NOW + 86400)
        if owner is not None:  # synthesized from a wildcard: same RRSIG, the query's name
            rrset = dns.rrset.from_rdata_list(owner, rrset.ttl, list(rrset))
        return [rrset, dns.rrset.from_rdata(owner or rrset.name, 300, sig)]

    def _exists(self, name: dns.name.Name) -> bool:
        return any(n.is_subdomain(name) for n in self.nodes)

    def _find(self, name: dns.name.Name, covering: bool) -> list[dns.rrset.RRset]:
        h = _hash(name, *self.params)
        for rrset in self.nsec3:
            owner = base64.b32hexdecode(rrset.name.labels[0].upper())
            nxt = bytes(rrset[0].next)
            hit = (owner < h < nxt or (owner >= nxt and (h > owner or h < nxt))) if covering \
                else owner == h
            if hit:
                return self.signed(rrset)
        return []

    def answer(self, qname: dns.name.Name, qtype: T) -> dns.message.Message:
        reply = dns.message.make_response(dns.message.make_query(qname, qtype, want_dnssec=True))
        reply.flags |= dns.flags.AA
        child = N("ins.n3.example.")
        if qname.is_subdomain(child) and not (qname == child and qtype == T.DS):
            reply.answer.append(dns.rrset.from_text(qname, 60, "IN", "TXT", '"unsigned"'))
            return reply  # the unsigned child's data
        data = [r for r in self.nodes.get(qname, []) if r.rdtype == qtype]
        if data:
            reply.answer += self.signed(data[0])
            return reply
        reply.authority += self.signed(self.nodes[ORIGIN][0])  # the SOA
        if self._exists(qname):  # NODATA (an empty non-terminal too), or DS at a delegation
            found = self._find(qname, covering=False)
            if found:
                reply.authority += found
                return reply
        encloser = qname.parent()
        while not self._exists(encloser):
            encloser = encloser.parent()
        next_closer = qname.split(len(encloser) + 1)[1]
        reply.authority += self._find(encloser, False) + self._find(next_closer, True)
        if self._exists(qname):  # only an opt-out span covers it
            return reply
        wildcard = dns.name.Name((b"*", *encloser.labels))
        synthesized = [r for r in self.nodes.get(wildcard, []) if r.rdtype == qtype]
        if synthesized:
            reply.answer += self.signed(synthesized[0], owner=qname)
            reply.authority = self._find(next_closer, True)
        elif wildcard in self.nodes:
            reply.authority += self._find(wildcard, False)
        else:
            reply.authority += self._find(wildcard, True)
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply


class ZoneValidator(Validator):
    def __init__(self, zone: Nsec3Zone,
                 tamper: Callable[[dns.message.Message], None] | None = None) -> None:
        super().__init__(Resolver("127.0.0.1"), zone.anchors())  # never asked
        self.zone, self.tamper = zone, tamper

    def exchange(self, qname: dns.name.Name, qtype: T) -> dns.message.Message:
        reply = self.zone.answer(qname, qtype)
        if self.tamper is not None:
            self.tamper(reply)
        return dns.message.from_wire(reply.to_wire())


@pytest.fixture(scope="module")
def zone() -> Nsec3Zone:
    return Nsec3Zone()


@pytest.fixture(scope="module")
def opt_out_zone() -> Nsec3Zone:
    return Nsec3Zone(salt=b"", iterations=0, opt_out=True)


@pytest.mark.parametrize("name, rdtype, security, present, why", [
    ("www.n3.example.", "A", Security.SECURE, True, ""),
    ("www.n3.example.", "TXT", Security.SECURE, False, "nodata (validated NSEC3)"),
    ("nothing.n3.example.", "TXT", Security.SECURE, False, "nxdomain (validated NSEC3)"),
    ("x.y.www.n3.example.", "TXT", Security.SECURE, False, "nxdomain"),  # encloser www
    ("b.n3.example.", "TXT", Security.SECURE, False, "nodata"),  # empty non-terminal
    ("a.wild.n3.example.", "TXT", Security.SECURE, True, ""),  # wildcard expansion
    ("a.wild.n3.example.", "A", Security.SECURE, False, "nodata"),  # wildcard NODATA
    ("ins.n3.example.", "DS", Security.SECURE, False, "insecure delegation"),
    ("host.ins.n3.example.", "TXT", Security.INSECURE, True, "insecure delegation"),
])
def test_proofs_accepted(zone: Nsec3Zone, name: str, rdtype: str, security: Security,
                         present: bool, why: str) -> None:
    answer = ZoneValidator(zone).query(name, rdtype)
    assert answer.security is security, answer.reason
    assert (answer.rrset is not None) is present
    assert why in answer.reason


@pytest.mark.parametrize("name, rdtype, security, present, why", [
    # RFC 5155 §8.6: the opt-out NSEC3 covering the delegation proves it unsigned.
    ("host.ins.n3.example.", "TXT", Security.INSECURE, True, "only an opt-out NSEC3"),
    ("ins.n3.example.", "DS", Security.INSECURE, False, "only an opt-out NSEC3"),
    # Never an authenticated NXDOMAIN: the name may be an unsigned delegation.
    ("nothing.n3.example.", "TXT", Security.INSECURE, False, "may be an unsigned delegation"),
    ("www.n3.example.", "TXT", Security.SECURE, False, "nodata"),  # matched: opt-out or not
    ("www.n3.example.", "A", Security.SECURE, True, ""),
])
def test_opt_out(opt_out_zone: Nsec3Zone, name: str, rdtype: str, security: Security,
                 present: bool, why: str) -> None:
    answer = ZoneValidator(opt_out_zone).query(name, rdtype)
    assert answer.security is security, answer.reason
    assert (answer.rrset is not None) is present
    assert why in answer.reason, answer.reason


Tamper = Callable[[dns.message.Message], None]


def _hits(rrset: dns.rrset.RRset, name: dns.name.Name) -> bool:
    """``rrset`` (an NSEC3 of the default zone's parameters) matches or covers ``name``."""
    h = _hash(name, b"\xab\x12", 3)
    owner = base64.b32hexdecode(rrset.name.labels[0].upper())
    nxt = bytes(rrset[0].next)
    return owner == h or owner < h < nxt or (owner >= nxt and (h > owner or h < nxt))


def _drop(covers: str) -> Callable[[Nsec3Zone], Tamper]:
    """Remove the NSEC3 (and its RRSIG) that matches or covers the name ``covers``."""
    def tamper(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype != T.TXT:
            return
        for rrset in [r for r in reply.authority if r.rdtype == T.NSEC3]:
            if _hits(rrset, N(covers)):
                reply.authority = [r for r in reply.authority if r.name != rrset.name]
    return lambda zone: tamper


def _apart(zone: Nsec3Zone) -> str:
    """A name whose next closer cover is not also the wildcard's cover (both are needed)."""
    for i in range(1000):
        name = N(f"nothing{i}.n3.example.")
        answer = zone.answer(name, T.TXT)
        covers = [r for r in answer.authority if r.rdtype == T.NSEC3 and _hits(r, name)]
        if covers and not _hits(covers[0], N("*.n3.example.")):
            return name.to_text()
    raise AssertionError("no such name")


def _strip_nsec3_sigs(zone: Nsec3Zone) -> Tamper:
    def tamper(reply: dns.message.Message) -> None:
        reply.authority = [r for r in reply.authority
                           if not (r.rdtype == T.RRSIG and r.covers == T.NSEC3)]
    return tamper


def _replay_www_nodata(zone: Nsec3Zone) -> Tamper:
    """Answer with the (validly signed) NSEC3 proof of another name: www's NODATA."""
    def tamper(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TXT:
            reply.authority = zone.answer(N("www.n3.example."), T.TXT).authority
            reply.set_rcode(dns.rcode.NXDOMAIN)
    return tamper


def _flip_next_hash(zone: Nsec3Zone) -> Tamper:
    def tamper(reply: dns.message.Message) -> None:
        for i, rrset in enumerate(reply.authority):
            if rrset.rdtype == T.NSEC3:
                rdata = rrset[0]
                nxt = bytearray(rdata.next)
                nxt[-1] ^= 1
                reply.authority[i] = dns.rrset.from_rdata(rrset.name, rrset.ttl,
                                                          rdata.replace(next=bytes(nxt)))
    return tamper


@pytest.mark.parametrize("tamper, name, rdtype, why", [
    (_drop("*.n3.example."), "APART", "TXT", "no NSEC3 covers the wildcard"),
    (_drop("nothing.n3.example."), "nothing.n3.example.", "TXT", "next closer name"),
    (_drop("www.n3.example."), "www.n3.example.", "TXT", "without signed NSEC"),
    (_strip_nsec3_sigs, "nothing.n3.example.", "TXT", "without signed NSEC3, but it is inside"),
    (_flip_next_hash, "nothing.n3.example.", "TXT", "does not validate"),
    (_replay_www_nodata, "nothing.n3.example.", "TXT", "no NSEC3 matches an ancestor"),
    (_drop("a.wild.n3.example."), "a.wild.n3.example.", "TXT",
     "is a wildcard expansion without"),
])
def test_broken_proofs_are_bogus(zone: Nsec3Zone, tamper: Callable[[Nsec3Zone], Tamper],
                                 name: str, rdtype: str, why: str) -> None:
    name = _apart(zone) if name == "APART" else name
    answer = ZoneValidator(zone, tamper(zone)).query(name, rdtype)
    assert answer.security is Security.BOGUS, answer.reason
    assert why in answer.reason, answer.reason


def test_iterations_over_the_cap_are_insecure() -> None:
    heavy = Nsec3Zone(iterations=nsec3.MAX_ITERATIONS + 1)
    denied = ZoneValidator(heavy).query("nothing.n3.example.", "TXT")
    assert denied.security is Security.INSECURE, denied.reason
    assert "151 hash iterations, above the 150" in denied.reason
    wild = ZoneValidator(heavy).query("a.wild.n3.example.", "TXT")
    assert wild.security is Security.INSECURE and "151 hash iterations" in wild.reason
    # Positive answers need no hashing: still secure.
    assert ZoneValidator(heavy).query("www.n3.example.", "A").security is Security.SECURE
    at_cap = Nsec3Zone(iterations=nsec3.MAX_ITERATIONS)
    assert ZoneValidator(at_cap).query("nothing.n3.example.", "TXT").security is Security.SECURE


# -- the proof logic alone -------------------------------------------------------------------

def _zone_chain(**kwargs: object) -> list[dns.rrset.RRset]:
    return chain(_nodes((*SIGNED, INSECURE)), **kwargs)  # type: ignore[arg-type]


def test_denial_logic() -> None:
    records = _zone_chain(salt=b"\x01\x02\x03", iterations=1)
    assert nsec3.denial(N("nope.n3.example."), T.A, records, ORIGIN) is Proof.NXDOMAIN
    assert nsec3.denial(N("www.n3.example."), T.TXT, records, ORIGIN) is Proof.NODATA
    assert nsec3.denial(N("ins.n3.example."), T.DS, records, ORIGIN) is Proof.DELEGATION
    assert nsec3.denial(N("x.wild.n3.example."), T.A, records, ORIGIN) is Proof.NODATA
    with pytest.raises(nsec3.Unproven, match="does not deny A"):
        nsec3.denial(N("www.n3.example."), T.A, records, ORIGIN)
    with pytest.raises(nsec3.Unproven, match="parent side of a delegation"):
        nsec3.denial(N("ins.n3.example."), T.TXT, records, ORIGIN)  # the child's to say
    with pytest.raises(nsec3.Unproven, match="is a delegation or DNAME"):
        nsec3.denial(N("x.ins.n3.example."), T.A, records, ORIGIN)
    with pytest.raises(nsec3.Unproven, match="exists with TXT or CNAME"):
        nsec3.denial(N("x.wild.n3.example."), T.TXT, records, ORIGIN)
    opt_out = _zone_chain(opt_out=True)
    assert nsec3.denial(N("ins.n3.example."), T.DS, opt_out, ORIGIN) is Proof.OPT_OUT
    assert nsec3.denial(N("nope.n3.example."), T.A, opt_out, ORIGIN) is Proof.OPT_OUT
    assert nsec3.denial(N("www.n3.example."), T.TXT, opt_out, ORIGIN) is Proof.NODATA
    secure_child = chain(_nodes((*SIGNED, "sec NS ns.example.", f"sec DS 1 13 2 {'AB' * 32}")))
    with pytest.raises(nsec3.Unproven, match="does not deny DS"):
        nsec3.denial(N("sec.n3.example."), T.DS, secure_child, ORIGIN)
    # Below an unsigned delegation of an opt-out zone: the delegation's name is not in the
    # chain, so the closest encloser is the apex and the opt-out cover says "maybe unsigned".
    assert nsec3.denial(N("x.ins.n3.example."), T.A, opt_out, ORIGIN) is Proof.OPT_OUT


def test_wrong_hash_parameters_prove_nothing() -> None:
    # The records were hashed with another salt: nothing matches the names we hash.
    records = [dns.rrset.from_rdata(r.name, 300, r[0].replace(salt=b""))  # claim no salt
               for r in _zone_chain(salt=b"\x01")]
    with pytest.raises(nsec3.Unproven, match="no closest encloser"):
        nsec3.denial(N("www.n3.example."), T.TXT, records, ORIGIN)


def test_unknown_hash_algorithm_and_bad_owners() -> None:
    with pytest.raises(nsec3.Unproven, match=r"unknown hash algorithm 2, RFC 5155 §8.1"):
        nsec3.denial(N("nope.n3.example."), T.A, _zone_chain(algorithm=2), ORIGIN)
    deep = dns.rrset.from_text("x.y.n3.example.", 300, "IN", "NSEC3",
                               f"1 0 0 - {'0' * 32} A")
    with pytest.raises(nsec3.Unproven, match="not one label below"):
        nsec3.denial(N("nope.n3.example."), T.A, [deep], ORIGIN)
    not_hash = dns.rrset.from_text("www.n3.example.", 300, "IN", "NSEC3",
                                   f"1 0 0 - {'0' * 32} A")
    with pytest.raises(nsec3.Unproven, match="not base32hex"):
        nsec3.denial(N("nope.n3.example."), T.A, [not_hash], ORIGIN)
    assert not nsec3.proves_expansion(N("a.wild.n3.example."), 2, [not_hash], ORIGIN)
    with pytest.raises(nsec3.Unverifiable):
        nsec3.proves_expansion(N("a.wild.n3.example."), 2, _zone_chain(iterations=500),
                               ORIGIN)


def test_records_that_are_not_a_sha1_chain_of_the_zone_prove_nothing() -> None:
    records = _zone_chain()
    flagged = [dns.rrset.from_rdata(r.name, 300, r[0].replace(flags=2)) for r in records]
    with pytest.raises(nsec3.Unproven, match=r"ignored: .*\(flags 2, RFC 5155 §8.2\)"):
        nsec3.denial(N("nope.n3.example."), T.A, flagged, ORIGIN)
    short_next = dns.rrset.from_rdata(records[0].name, 300, records[0][0].replace(next=bytes(10)))
    with pytest.raises(nsec3.Unproven, match="next hashed owner of 10 bytes"):
        nsec3.denial(N("nope.n3.example."), T.A, [short_next, *records[1:]], ORIGIN)
    short_owner = dns.rrset.from_text("00000000.n3.example.", 300, "IN", "NSEC3",
                                      f"1 0 0 - {'0' * 32} A")
    with pytest.raises(nsec3.Unproven, match="the owner is not a SHA-1 hash"):
        nsec3.denial(N("nope.n3.example."), T.A, [short_owner, *records], ORIGIN)
    other_zone = dns.rrset.from_text(f"{'0' * 32}.n4.example.", 300, "IN", "NSEC3",
                                     f"1 0 0 - {'0' * 32} A")
    with pytest.raises(nsec3.Unproven, match=r"not one label below n3\.example\."):
        nsec3.denial(N("nope.n3.example."), T.A, [other_zone, *records], ORIGIN)


def test_an_answer_signed_for_its_own_name_is_no_expansion() -> None:
    # RRSIG labels 3 for www.n3.example.: the name itself was signed, nothing to prove.
    assert not nsec3.proves_expansion(N("www.n3.example."), 3, _zone_chain(), ORIGIN)
