"""The in-process validator's chain logic, against zones signed here with dns.dnssec."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from oeagent.discovery.anchors import Anchors, load_anchors
from oeagent.discovery.nsec import Proof, denial
from oeagent.discovery.validate import Validator
from oeagent.errors import OeagentError
from oeagent.resolver import Resolver, Security

T = dns.rdatatype.RdataType
N = dns.name.from_text
NOW = time.time()


def _key() -> tuple[ec.EllipticCurvePrivateKey, dns.rdtypes.ANY.DNSKEY.DNSKEY]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, dns.dnssec.make_dnskey(private.public_key(), "ECDSAP256SHA256", flags=257)


def _zone(origin: str, text: str, key: tuple[ec.EllipticCurvePrivateKey, dns.rdtypes.ANY.DNSKEY.DNSKEY] | None
          ) -> dns.zone.Zone:
    zone = dns.zone.from_text(f"$TTL 300\n@ SOA ns.example. h.example. 1 60 60 60 60\n"
                              f"@ NS ns.example.\n{text}", origin=origin, relativize=False)
    if key is not None:
        dns.dnssec.sign_zone(zone, keys=[key], inception=NOW - 3600, expiration=NOW + 86400)
    return zone


class World:
    """example. (signed, the anchor) with children sub. (signed, DS), ins. (no DS), unsup.
    (a DS with an algorithm nobody implements); answers like an authoritative server."""

    def __init__(self) -> None:
        self.parent_key, self.child_key = _key(), _key()
        ds = dns.dnssec.make_ds("sub.example.", self.child_key[1], "SHA256")
        self.zones = {
            "sub.example.": _zone("sub.example.", "host TXT \"signed child\"\n", self.child_key),
            "ins.example.": _zone("ins.example.", "host TXT \"unsigned child\"\n", None),
            "unsup.example.": _zone("unsup.example.", "host TXT \"unsupported\"\n", None),
            "example.": _zone("example.", (
                "www A 192.0.2.1\n*.wild TXT \"wild\"\nsub NS ns.example.\n"
                f"sub DS {ds}\nins NS ns.example.\nunsup NS ns.example.\n"
                f"unsup DS 1 253 2 {'AB' * 32}\nstale TXT \"old\"\n"), self.parent_key),
        }
        # An RRSIG that expired an hour ago on stale.example. TXT.
        zone = self.zones["example."]
        with zone.writer() as txn:
            rrset = dns.rrset.from_rdata_list(N("stale.example."), 300,
                                              list(txn.get(N("stale.example."), T.TXT)))
            sig = dns.dnssec.sign(rrset, self.parent_key[0], N("example."), self.parent_key[1],
                                  inception=NOW - 7200, expiration=NOW - 3600)
            txn.replace(N("stale.example."), 300, sig)

    def anchors(self, dnskey: bool = False) -> Anchors:
        origin = N("example.")
        rdata: dns.rdata.Rdata = (self.parent_key[1] if dnskey else
                                  dns.dnssec.make_ds(origin, self.parent_key[1], "SHA256"))
        return {origin: [dns.rrset.from_rdata(origin, 300, rdata)]}

    def answer(self, qname: dns.name.Name, qtype: T) -> dns.message.Message:
        served = [N(z) for z in self.zones if qname.is_subdomain(N(z))
                  and not (qtype == T.DS and qname == N(z))]
        reply = dns.message.make_response(dns.message.make_query(qname, qtype, want_dnssec=True))
        if not served:  # somewhere else entirely: unsigned data
            reply.answer.append(dns.rrset.from_text(qname, 60, "IN", "TXT", '"elsewhere"'))
            return reply
        zone = self.zones[max(served, key=len).to_text()]

        def add(section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: T,
                owner: dns.name.Name | None = None) -> bool:
            node = zone.get_node(name)
            if node is None or node.get_rdataset(dns.rdataclass.IN, rdtype) is None:
                return False
            for covers, what in ((T.NONE, rdtype), (rdtype, T.RRSIG)):
                rds = node.get_rdataset(dns.rdataclass.IN, what, covers)
                if rds is not None:
                    section.append(dns.rrset.from_rdata_list(owner or name, rds.ttl, list(rds)))
            return True

        def covering(name: dns.name.Name) -> None:
            before: dns.name.Name = max((n for n in zone.nodes if n < name),
                                      default=zone.origin or dns.name.root)
            if not any(r.name == before and r.rdtype == T.NSEC for r in reply.authority):
                add(reply.authority, before, T.NSEC)

        if add(reply.answer, qname, qtype):
            return reply
        for name, node in zone.nodes.items():  # a delegation above or at qname: refer
            if (name != zone.origin and qname.is_subdomain(name) and qtype != T.DS
                    and node.get_rdataset(dns.rdataclass.IN, T.NS)):
                add(reply.authority, name, T.NS)
                add(reply.authority, name, T.NSEC)
                return reply
        origin = zone.origin
        assert origin is not None
        add(reply.authority, origin, T.SOA)
        def exists(name: dns.name.Name) -> bool:  # empty non-terminals exist too
            return any(n.is_subdomain(name) for n in zone.nodes)

        if exists(qname):
            if not add(reply.authority, qname, T.NSEC):
                covering(qname)
            return reply
        encloser = qname.parent()
        while not exists(encloser):
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*", *encloser.labels))
        covering(qname)
        if zone.get_node(wildcard) is not None:
            if add(reply.answer, wildcard, qtype, owner=qname):
                reply.authority = [r for r in reply.authority if r.rdtype != T.SOA]
            else:
                add(reply.authority, wildcard, T.NSEC)
            return reply
        covering(wildcard)
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply


class FakeValidator(Validator):
    def __init__(self, world: World, anchors: Anchors,
                 tamper: Callable[[dns.message.Message], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(Resolver("192.0.2.53"), anchors, clock)
        self.world, self.tamper, self.asked = world, tamper, 0

    def exchange(self, qname: dns.name.Name, qtype: T) -> dns.message.Message:
        self.asked += 1
        reply = self.world.answer(qname, qtype)
        if self.tamper is not None:
            self.tamper(reply)
        return dns.message.from_wire(reply.to_wire())  # as from the network (and its index)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.mark.parametrize("name, rdtype, security, present", [
    ("www.example.", "A", Security.SECURE, True),
    ("host.sub.example.", "TXT", Security.SECURE, True),  # DS -> DNSKEY -> TXT
    ("www.example.", "TXT", Security.SECURE, False),  # NODATA, NSEC at the name
    ("nothing.example.", "TXT", Security.SECURE, False),  # NXDOMAIN, two NSECs
    ("nothing.sub.example.", "TXT", Security.SECURE, False),
    ("a.wild.example.", "TXT", Security.SECURE, True),  # wildcard expansion + NSEC
    ("a.wild.example.", "A", Security.SECURE, False),  # wildcard NODATA
    ("host.ins.example.", "TXT", Security.INSECURE, True),  # NSEC: NS, no DS
    ("host.ins.example.", "A", Security.INSECURE, False),
    ("host.other.", "TXT", Security.INSECURE, True),  # no anchor covers it
])
def test_verdicts(world: World, name: str, rdtype: str, security: Security,
                  present: bool) -> None:
    answer = FakeValidator(world, world.anchors()).query(name, rdtype)
    assert answer.security is security, answer.reason
    assert (answer.rrset is not None) is present


def test_dnskey_anchor(world: World) -> None:
    answer = FakeValidator(world, world.anchors(dnskey=True)).query("host.sub.example.", "TXT")
    assert answer.security is Security.SECURE, answer.reason


def test_unsupported_algorithm_is_insecure(world: World) -> None:
    answer = FakeValidator(world, world.anchors()).query("host.unsup.example.", "TXT")
    assert answer.security is Security.INSECURE
    assert "algorithms [253] are not supported" in answer.reason and "RFC 4035" in answer.reason


def test_expired_signature_is_bogus(world: World) -> None:
    answer = FakeValidator(world, world.anchors()).query("stale.example.", "TXT")
    assert answer.security is Security.BOGUS
    assert "TXT stale.example." in answer.reason and "expired" in answer.reason


def test_clock_is_checked(world: World) -> None:
    late = FakeValidator(world, world.anchors(), clock=lambda: NOW + 2 * 86400)
    answer = late.query("www.example.", "A")
    assert answer.security is Security.BOGUS and "expired" in answer.reason


def test_wrong_anchor_is_bogus(world: World) -> None:
    other = dns.dnssec.make_ds("example.", _key()[1], "SHA256")
    anchors = {N("example."): [dns.rrset.from_rdata(N("example."), 300, other)]}
    answer = FakeValidator(world, anchors).query("www.example.", "A")
    assert answer.security is Security.BOGUS
    assert f"no key matches the DS ({other.key_tag})" in answer.reason


def _modify_a(reply: dns.message.Message) -> None:
    for i, rrset in enumerate(reply.answer):
        if rrset.rdtype == T.A:
            reply.answer[i] = dns.rrset.from_text(rrset.name, rrset.ttl, "IN", "A", "192.0.2.66")


def _strip_sigs(reply: dns.message.Message) -> None:
    if reply.question[0].rdtype in (T.A, T.TXT):
        reply.answer = [r for r in reply.answer if r.rdtype != T.RRSIG]


def _strip_nsec(reply: dns.message.Message) -> None:
    reply.authority = [r for r in reply.authority if r.rdtype not in (T.NSEC, T.RRSIG)]


def _nsec3(reply: dns.message.Message) -> None:
    if reply.authority:
        reply.authority = [r for r in reply.authority if r.rdtype != T.NSEC]
        reply.authority.append(dns.rrset.from_text(
            "abcdefgh.example.", 300, "IN", "NSEC3", "1 0 0 - ABCDEFGH A RRSIG"))


@pytest.mark.parametrize("tamper, name, rdtype, security, why", [
    (_modify_a, "www.example.", "A", Security.BOGUS, "does not validate"),
    (_strip_sigs, "www.example.", "A", Security.BOGUS, "inside a signed zone"),
    (_strip_sigs, "host.sub.example.", "TXT", Security.BOGUS, "inside a signed zone"),
    (_strip_nsec, "nothing.example.", "TXT", Security.BOGUS, "inside a signed zone"),
    (_nsec3, "nothing.example.", "TXT", Security.BOGUS, "without signed NSEC3"),
])
def test_tampering(world: World, tamper: Callable[[dns.message.Message], None], name: str,
                   rdtype: str, security: Security, why: str) -> None:
    answer = FakeValidator(world, world.anchors(), tamper).query(name, rdtype)
    assert answer.security is security and why in answer.reason, answer.reason


def test_replayed_wildcard_answer_needs_its_nsec(world: World) -> None:
    def drop_authority(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TXT:
            reply.authority = []

    answer = FakeValidator(world, world.anchors(), drop_authority).query("a.wild.example.", "TXT")
    assert answer.security is Security.BOGUS and "wildcard expansion" in answer.reason


def test_signer_above_the_anchor_is_bogus(world: World) -> None:
    rogue = _key()

    def resign(reply: dns.message.Message) -> None:
        for i, rrset in enumerate(reply.answer):
            if rrset.rdtype == T.RRSIG:
                a = next(r for r in reply.answer if r.rdtype == T.A)
                sig = dns.dnssec.sign(a, rogue[0], dns.name.root, rogue[1], lifetime=3600)
                reply.answer[i] = dns.rrset.from_rdata(a.name, a.ttl, sig)

    answer = FakeValidator(world, world.anchors(), resign).query("www.example.", "A")
    assert answer.security is Security.BOGUS and "outside the trust anchor" in answer.reason


def test_dnskey_and_ds_are_cached(world: World) -> None:
    validator = FakeValidator(world, world.anchors())
    validator.query("host.sub.example.", "TXT")
    assert validator.asked == 4  # TXT, DS sub, DNSKEY example, DNSKEY sub
    validator.query("host.sub.example.", "TXT")
    validator.query("www.example.", "A")
    assert validator.asked == 6  # each only its own RRset


def test_denial_logic() -> None:
    zone = N("example.")

    def nsec(owner: str, nxt: str, types: str) -> dns.rrset.RRset:
        return dns.rrset.from_text(owner, 60, "IN", "NSEC", f"{nxt} {types}")

    chain = [nsec("example.", "b.example.", "SOA NS NSEC RRSIG"),
             nsec("b.example.", "d.example.", "A NSEC RRSIG")]
    assert denial(N("c.example."), T.A, chain, zone) is Proof.NXDOMAIN  # covers *.example. too
    assert denial(N("b.example."), T.TXT, chain, zone) is Proof.NODATA
    assert denial(N("b.example."), T.A, chain, zone) is None
    assert denial(N("e.example."), T.A, chain, zone) is None  # not covered
    delegation = [nsec("b.example.", "d.example.", "NS NSEC RRSIG"),
                  nsec("a.example.", "b.example.", "A NSEC RRSIG")]
    assert denial(N("x.b.example."), T.A, delegation, zone) is None  # the child's to say
    assert denial(N("b.example."), T.DS, delegation, zone) is Proof.DELEGATION
    assert denial(N("b.example."), T.A, delegation, zone) is None  # parent-side NSEC
    last = [nsec("y.example.", "example.", "A NSEC RRSIG"),
            nsec("example.", "a.example.", "SOA NS NSEC RRSIG")]
    assert denial(N("z.example."), T.A, last, zone) is Proof.NXDOMAIN
    ent = [nsec("a.example.", "x.b.example.", "A NSEC RRSIG")]
    assert denial(N("b.example."), T.TXT, ent, zone) is Proof.NODATA  # empty non-terminal


def test_extra_unsigned_rrsets_are_ignored(world: World) -> None:
    def inject(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.A:
            reply.answer.insert(0, dns.rrset.from_text("x.ins.example.", 60, "IN", "A", "192.0.2.9"))

    answer = FakeValidator(world, world.anchors(), inject).query("www.example.", "A")
    assert answer.security is Security.SECURE, answer.reason
    assert [r.to_text() for r in answer.rrset or []] == ["192.0.2.1"]


def test_unsigned_nsec_from_an_insecure_zone_does_not_downgrade(world: World) -> None:
    def forge(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TXT:
            reply.authority = [dns.rrset.from_text("a.ins.example.", 60, "IN", "NSEC",
                                                   "z.ins.example. A NSEC")]

    answer = FakeValidator(world, world.anchors(), forge).query("nothing.example.", "TXT")
    assert answer.security is Security.BOGUS, answer.reason


def test_ds_denied_by_the_child_itself_is_bogus(world: World) -> None:
    child_key = world.child_key

    def child_denies(reply: dns.message.Message) -> None:
        q = reply.question[0]
        if q.rdtype == T.DS and q.name == N("sub.example."):
            nsec = dns.rrset.from_text("sub.example.", 300, "IN", "NSEC",
                                       "host.sub.example. SOA NS NSEC RRSIG DNSKEY")
            sig = dns.dnssec.sign(nsec, child_key[0], N("sub.example."), child_key[1],
                                  lifetime=3600)
            reply.answer = []
            reply.authority = [nsec, dns.rrset.from_rdata(nsec.name, 300, sig)]

    answer = FakeValidator(world, world.anchors(), child_denies).query("host.sub.example.", "TXT")
    assert answer.security is Security.BOGUS and "cannot deny it" in answer.reason, answer.reason


def test_load_anchors(tmp_path: Path) -> None:
    path = tmp_path / "anchors"
    path.write_text("; the root and a private zone\n"
                    ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n"
                    "corp.example 60 IN DNSKEY 257 3 13 aGVsbG8=\n")
    anchors = load_anchors(path)
    assert set(anchors) == {dns.name.root, N("corp.example.")}
    path.write_text("corp.example. IN A 192.0.2.1\n")
    with pytest.raises(OeagentError, match="no DS or DNSKEY"):
        load_anchors(path)
    path.write_text("corp.example. IN DS nonsense\n")
    with pytest.raises(OeagentError, match="cannot read trust anchors"):
        load_anchors(path)


def test_asking_for_dnskey_and_ds_directly(world: World) -> None:
    validator = FakeValidator(world, world.anchors())
    keys = validator.query("example.", "DNSKEY")
    assert keys.security is Security.SECURE and keys.rrset is not None
    assert validator.query("sub.example.", "DS").security is Security.SECURE
    assert validator.query("ins.example.", "DS").security is Security.SECURE  # denied, validated
    assert validator.query("host.sub.example.", "TXT").security is Security.SECURE
