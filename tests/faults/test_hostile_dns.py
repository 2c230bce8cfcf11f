"""Hostile DNS answers served for real (issue #7): a resolver on loopback (so its AD bit is
believed, as from a local unbound passing a malicious zone's signed data) that answers with
hundreds of records, replies near 64 KiB over TCP, and records for names other than the one
asked. Each must cost bounded work and be refused or ignored with its reason, never counted
as the peer's advertisement. With in-process validation (the resolver trusted for nothing),
the same server forwards to the lab's BIND and slips another peer's validly signed records
in: bogus."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from lab import Lab
from lab import bind as lab_bind
from oeagent.config import DiscoveryConfig
from oeagent.discovery import records
from oeagent.discovery.lookup import Discoverer, Result
from oeagent.publish import records as publisher_records
from oeagent.resolver import Resolver, query
from tests.faults.harness import fault
from tests.hostile_dns import HostileDNS, forwarding
from tests.integration.oe_peers import new_advert, publish_dns, unique

NOW = dt.datetime.now(dt.UTC)
PEER = "peer.example.org"
OTHER = "other.example.net."
T = dns.rdatatype.RdataType
Zone = dict[tuple[dns.name.Name, T], dns.rrset.RRset]
Mutate = Callable[[dns.message.Message, dns.message.Message], None]
Start = Callable[..., tuple[HostileDNS, DiscoveryConfig]]
"""``hostile(zone, mutate=None)``: a hostile resolver serving ``zone``, and a config for it."""

AD, KEY = new_advert(PEER)
OWNER = dns.name.from_text(f"{PEER}.")
TLSA500 = records.tlsa_name(PEER, 500)
TXT = records.txt_name(PEER)


def honest_zone() -> Zone:
    """What the publisher puts out for PEER, plus its address."""
    zone: Zone = {key: rrset for key, rrset in
                  publisher_records.dns_rrsets(AD, (KEY.public_key(),), 300, False).items()}
    zone[(OWNER, T.A)] = dns.rrset.from_text(OWNER, 300, "IN", "A", "198.51.100.7")
    return zone


def resolver_for(zone: Zone, mutate: Mutate | None = None
                 ) -> Callable[[dns.message.Message], dns.message.Message]:
    """Answer from ``zone`` with AD set, then let ``mutate`` play its game."""

    def respond(request: dns.message.Message) -> dns.message.Message:
        q = request.question[0]
        reply = dns.message.make_response(request)
        reply.flags |= dns.flags.AD
        if (rrset := zone.get((q.name, q.rdtype))) is not None:
            reply.answer.append(rrset)
        if mutate is not None:
            mutate(request, reply)
        return reply

    return respond


@pytest.fixture
def hostile() -> Iterator[Start]:
    servers: list[HostileDNS] = []

    def start(zone: Zone, mutate: Mutate | None = None) -> tuple[HostileDNS, DiscoveryConfig]:
        server = HostileDNS(resolver_for(zone, mutate)).__enter__()
        servers.append(server)
        return server, DiscoveryConfig(resolver="127.0.0.1", resolver_port=server.port,
                                       dns_timeout=1, https=False)

    yield start
    for server in servers:
        server.stop()


def timed_lookup(cfg: DiscoveryConfig) -> Result:
    started = time.monotonic()
    result = Discoverer(cfg).lookup(PEER, NOW)
    assert time.monotonic() - started < 2, "bounded work: a lookup well under two seconds"
    return result


def test_the_honest_zone_through_the_hostile_server_is_authenticated(hostile: Start) -> None:
    _, cfg = hostile(honest_zone())
    result = timed_lookup(cfg)
    assert result.status == "authenticated", result.reasons
    assert result.advertisement is not None and result.advertisement.pins == AD.pins


# ---- many records ------------------------------------------------------------------------

def _tlsa(count: int) -> dns.rrset.RRset:
    texts = [f"3 1 1 {os.urandom(32).hex()}" for _ in range(count)] + [f"3 1 1 {AD.pins[0]}"]
    return dns.rrset.from_text_list(TLSA500, 300, "IN", "TLSA", texts)


def _ipseckeys(count: int) -> dns.rrset.RRset:
    honest = list(honest_zone()[(OWNER, T.IPSECKEY)])
    crowd = []
    for _ in range(count):
        _, key = publisher_records.ipseckey_algorithm_and_key(
            ec.generate_private_key(ec.SECP256R1()).public_key())
        crowd.append(honest[0].replace(precedence=5, key=key))
    return dns.rrset.from_rdata_list(OWNER, 300, honest + crowd)


def _txts(count: int) -> dns.rrset.RRset:
    texts = [f'"filler {i}"' for i in range(count)] + [f'"{AD.txt()}"']
    return dns.rrset.from_text_list(TXT, 300, "IN", "TXT", texts)


MANY: dict[str, tuple[tuple[dns.name.Name, T], Callable[[], dns.rrset.RRset], int]] = {
    # id: (owner and type replaced, rrset factory, least wire size of the reply)
    "tlsa-150": ((TLSA500, T.TLSA), lambda: _tlsa(150), 0),
    "ipseckey-150": ((OWNER, T.IPSECKEY), lambda: _ipseckeys(150), 0),
    "txt-150": ((TXT, T.TXT), lambda: _txts(150), 0),
    "tlsa-64KiB-over-tcp": ((TLSA500, T.TLSA), lambda: _tlsa(1350), 60_000),
}


@fault("many records: 150 TLSA, IPSECKEY or _oe TXT records, and 1350 TLSA in a reply near "
       "64 KiB (truncated over UDP, whole over TCP)", "discover",
       f"bounded work (under 2 s, no key decoded): the RRset is refused, more than "
       f"{records.MAX_RRSET} records; the peer is invalid, never authenticated",
       cases=len(MANY))
@pytest.mark.parametrize("case", list(MANY))
def test_many_records_are_refused(case: str, hostile: Start,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key, make, least = MANY[case]
    zone = honest_zone()
    zone[key] = make()
    decoded: list[object] = []
    real = records.ipseckey_public

    def counting(rdata: object) -> tuple[str, str]:
        decoded.append(rdata)
        return real(rdata)  # type: ignore[arg-type]

    monkeypatch.setattr(records, "ipseckey_public", counting)
    server, cfg = hostile(zone)
    result = timed_lookup(cfg)
    assert result.status == "invalid" and result.advertisement is None, result.reasons
    name, rdtype = key
    says = (f"{dns.rdatatype.to_text(rdtype)} {name} has {len(zone[key])} records; "
            f"more than {records.MAX_RRSET} are refused")
    assert any(says in r for r in result.reasons), result.reasons
    assert decoded == [], "keys decoded although the lookup was refused"
    if least:
        wire = len(resolver_for(zone)(dns.message.make_query(name, rdtype)).to_wire(
            max_size=65535))
        assert least <= wire <= 65535
        asked = [(transport, r.question[0].name) for transport, r in server.queries]
        assert ("udp", name) in asked and ("tcp", name) in asked  # truncated, then TCP


@fault("a name with 150 A and 150 AAAA records (a reply over 6 KiB, over TCP)", "discover",
       "at most 16 addresses are used (the lowest: stable when the order rotates), with the "
       "reason; not one conn per record", cases=1)
def test_many_addresses_are_capped(hostile: Start) -> None:
    zone = honest_zone()
    v4 = [f"198.51.100.{i}" for i in range(1, 151)]
    v6 = [f"2001:db8::{i:x}" for i in range(1, 151)]
    zone[(OWNER, T.A)] = dns.rrset.from_text_list(OWNER, 300, "IN", "A", v4[::-1])
    zone[(OWNER, T.AAAA)] = dns.rrset.from_text_list(OWNER, 300, "IN", "AAAA", v6)
    _, cfg = hostile(zone)
    result = timed_lookup(cfg)
    assert result.status == "authenticated", result.reasons
    assert result.addresses == tuple(v4[:16])
    assert result.advertisement is not None and result.advertisement.addresses == tuple(v4[:16])
    assert "DNS: 300 addresses; only the lowest 16 are used" in result.reasons


# ---- records for other names -------------------------------------------------------------

def _rename(rrset: dns.rrset.RRset, owner: str) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(dns.name.from_text(owner), rrset.ttl, list(rrset))


def _keys(request: dns.message.Message) -> bool:
    return request.question[0].rdtype in (T.TLSA, T.IPSECKEY)


def other_owner(request: dns.message.Message, reply: dns.message.Message) -> None:
    """Every answer is the record asked for, but owned by another name."""
    reply.answer = [_rename(r, f"{r.name.labels[0].decode()}.{OTHER}") for r in reply.answer]


def keys_elsewhere(request: dns.message.Message, reply: dns.message.Message) -> None:
    if _keys(request):
        reply.answer = [_rename(r, f"x.{OTHER}") for r in reply.answer]


def cname_not_from_the_name(request: dns.message.Message, reply: dns.message.Message) -> None:
    """A CNAME at another name pointing at the records: not on the chain from the question."""
    if _keys(request):
        target = f"x.{OTHER}"
        reply.answer = [dns.rrset.from_text(f"y.{OTHER}", 300, "IN", "CNAME", target),
                        *(_rename(r, target) for r in reply.answer)]


def cname_loop(request: dns.message.Message, reply: dns.message.Message) -> None:
    if _keys(request):
        a, b = f"a.{OTHER}", f"b.{OTHER}"
        reply.answer = [dns.rrset.from_text(request.question[0].name, 300, "IN", "CNAME", a),
                        dns.rrset.from_text(a, 300, "IN", "CNAME", b),
                        dns.rrset.from_text(b, 300, "IN", "CNAME", a),
                        *(_rename(r, f"c.{OTHER}") for r in reply.answer)]


def dname_without_cname(request: dns.message.Message, reply: dns.message.Message) -> None:
    """A DNAME at the peer's parent and the records at the rewritten name, but no CNAME
    synthesized for the name asked: a stub must not do the rewriting itself."""
    if _keys(request):
        qname = request.question[0].name
        moved = qname.relativize(dns.name.from_text("example.org.")).derelativize(
            dns.name.from_text(OTHER))
        reply.answer = [dns.rrset.from_text("example.org.", 300, "IN", "DNAME", OTHER),
                        *(_rename(r, moved.to_text()) for r in reply.answer)]


def in_additional(request: dns.message.Message, reply: dns.message.Message) -> None:
    if _keys(request):
        reply.additional, reply.answer = list(reply.answer), []


def in_authority(request: dns.message.Message, reply: dns.message.Message) -> None:
    if _keys(request):
        reply.authority, reply.answer = list(reply.answer), []


def another_question(request: dns.message.Message, reply: dns.message.Message) -> None:
    """The whole reply is about another name's _oe record."""
    if request.question[0].rdtype == T.TXT:
        other = dns.name.from_text(f"_oe.{OTHER}")
        reply.question = [dns.rrset.RRset(other, dns.rdataclass.IN, T.TXT)]
        reply.answer = [_rename(r, other.to_text()) for r in reply.answer]


OTHER_NAMES: dict[str, tuple[Mutate, str, str]] = {  # id: (game, status, reason)
    "owned-by-another-name": (other_owner, "none", f"ignored TXT _oe.{OTHER}"),
    "keys-owned-elsewhere": (keys_elsewhere, "invalid", f"ignored TLSA x.{OTHER}"),
    "cname-not-from-the-name": (cname_not_from_the_name, "invalid", f"ignored CNAME y.{OTHER}"),
    "cname-loop": (cname_loop, "invalid", "CNAME chain of 8 or more (or a loop)"),
    "dname-without-cname": (dname_without_cname, "invalid", "ignored DNAME example.org."),
    "additional-section": (in_additional, "invalid", "TLSA _500._udp.peer.example.org.: no "
                           "such record"),
    "authority-section": (in_authority, "invalid", "TLSA _500._udp.peer.example.org.: no "
                          "such record"),
    "reply-to-another-question": (another_question, "unreachable",
                                  "answered another question"),
}


@fault("records for other names: answers owned by another name, a CNAME not from the name "
       "asked, a CNAME loop, a DNAME without its CNAME, records only in the additional or "
       "authority section, a reply to another question", "discover",
       "never read as the peer's: ignored, the reason naming what was passed over (or "
       "unreachable for a reply to another question); never authenticated",
       cases=len(OTHER_NAMES))
@pytest.mark.parametrize("case", list(OTHER_NAMES))
def test_records_for_other_names_never_count(case: str, hostile: Start) -> None:
    game, status, says = OTHER_NAMES[case]
    server, cfg = hostile(honest_zone(), game)
    result = timed_lookup(cfg)
    assert result.status == status and result.advertisement is None, result.reasons
    # The resolver path's own verdicts, for the records the lookup reads.
    resolver = Resolver("127.0.0.1", server.port, timeout=1)
    said = [query(resolver, name, rdtype).reason
            for name, rdtype in [(TXT, "TXT"), (TLSA500, "TLSA"), (OWNER, "IPSECKEY")]]
    assert any(says in r for r in [*result.reasons, *said]), (result.reasons, said)


def test_a_cname_at_the_name_itself_is_followed(hostile: Start) -> None:
    """Not a fault: the peer's own (signed) CNAME may point its records elsewhere, as DANE
    allows for TLSA (RFC 7671 §7); what is found there counts because the peer said so."""
    zone = honest_zone()
    target = f"_500._udp.keys.{OTHER}"
    zone[(dns.name.from_text(target), T.TLSA)] = _rename(zone.pop((TLSA500, T.TLSA)), target)

    def alias(request: dns.message.Message, reply: dns.message.Message) -> None:
        if request.question[0].name == TLSA500:
            reply.answer = [dns.rrset.from_text(TLSA500, 300, "IN", "CNAME", target),
                            zone[(dns.name.from_text(target), T.TLSA)]]

    _, cfg = hostile(zone, alias)
    result = timed_lookup(cfg)
    assert result.status == "authenticated", result.reasons


# ---- the same games against in-process validation, with real signatures -------------------

def _signed_tlsa(lab: Lab, fqdn: str) -> list[dns.rrset.RRset]:
    """Another peer's real TLSA RRset at _500._udp and its RRSIG, straight from BIND."""
    reply = lab_bind.query(lab.info.bind_port, records.tlsa_name(fqdn, 500).to_text(), "TLSA",
                           tcp=True)
    assert reply.answer, f"BIND has no TLSA for {fqdn}"
    return list(reply.answer)


def _cname_to_other(other: list[dns.rrset.RRset]) -> Callable[[dns.message.Message], None]:
    """A forged (unsigned) CNAME from the peer's TLSA name to another peer's signed TLSA."""
    def game(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TLSA:
            target = other[0].name
            reply.answer = [dns.rrset.from_text(reply.question[0].name, 30, "IN", "CNAME",
                                                target.to_text()), *other]
    return game


def _answer_for_other(other: list[dns.rrset.RRset]) -> Callable[[dns.message.Message], None]:
    """The peer's TLSA replaced by another peer's signed TLSA, owned by that peer's name."""
    def game(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TLSA:
            reply.answer = list(other)
    return game


def _additional_for_other(other: list[dns.rrset.RRset]) -> Callable[[dns.message.Message], None]:
    def game(reply: dns.message.Message) -> None:
        if reply.question[0].rdtype == T.TLSA:
            reply.answer, reply.additional = [], list(other)
    return game


IN_PROCESS = {  # id: (game, what the reason says)
    "forged-cname-to-another-peer": (_cname_to_other, "is unsigned, but it is inside a signed"),
    "another-peers-signed-tlsa": (_answer_for_other, "denial without signed NSEC"),
    "signed-tlsa-in-additional": (_additional_for_other, "denial without signed NSEC"),
}


@fault("in-process validation: another peer's validly signed TLSA served for the peer (under "
       "a forged CNAME, as the answer, in the additional section), through a tampering proxy "
       "in front of BIND", "discover",
       "bogus with the reason, never the other peer's pins", cases=len(IN_PROCESS))
@pytest.mark.lab
@pytest.mark.parametrize("case", list(IN_PROCESS))
def test_another_peers_signed_records_never_count_in_process(
        case: str, lab: Lab, tmp_path: Path) -> None:
    make, says = IN_PROCESS[case]
    ad, key = new_advert(unique())
    other, other_key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=30)
    publish_dns(lab, other, other_key, ttl=30)
    anchors = tmp_path / "anchors.ds"
    anchors.write_text("\n".join(lab_bind.ds_records(lab.info.bind_port)) + "\n")
    with HostileDNS(forwarding(lab.info.bind_port, make(_signed_tlsa(lab, other.fqdn)))) as s:
        cfg = DiscoveryConfig(resolver="127.0.0.1", resolver_port=s.port, dns_timeout=1,
                              https=False, validation="in-process", trust_anchors=anchors)
        result = Discoverer(cfg).lookup(ad.fqdn, NOW)
    assert result.status == "bogus" and result.advertisement is None, result.reasons
    assert any(r.startswith(f"TLSA _500._udp.{ad.fqdn}.: ") and says in r
               for r in result.reasons), result.reasons
