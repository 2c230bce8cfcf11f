"""Discovery and policy pieces without the lab, with property-based tests where they pay."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oeagent import dnswire, keys
from oeagent.advertisement import Advertisement, AdvertisementError, parse_document
from oeagent.discovery import records
from oeagent.discovery.entries import Entry
from oeagent.discovery.holding import merge
from oeagent.discovery.lookup import Result
from oeagent.policy import model, render
from oeagent.resolver import Security, classify
from tests.integration.oe_peers import ipseckey_rdata

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
PIN = "ab" * 32
HOST = "peer.example.org"

# ---- the well-known document parser -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def good_document(**changes: Any) -> dict[str, Any]:
    doc = Advertisement(HOST, "ecdsa", (PIN,)).document(NOW + dt.timedelta(days=1))
    doc.update(changes)
    return doc


@given(st.binary(max_size=512))
def test_parser_rejects_arbitrary_bytes_only_with_its_own_error(data: bytes) -> None:
    try:
        parse_document(data, HOST, NOW)
    except AdvertisementError:
        pass


@given(st.sampled_from(sorted(good_document())), json_values)
def test_parser_never_accepts_a_mutated_field_silently(key: str, value: Any) -> None:
    doc = good_document(**{key: value})
    try:
        advert, _ = parse_document(json.dumps(doc).encode(), HOST, NOW)
    except AdvertisementError:
        return
    # Accepted: then the id still matches the content, so the field was really valid.
    assert advert.id == doc["id"]


@given(
    mode=st.sampled_from(["enforce", "testing"]),
    auth=st.sampled_from(["ecdsa", "rsasig"]),
    max_age=st.integers(60, 31_557_600),
    pins=st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), min_size=1, max_size=8,
                  unique=True),
    addresses=st.lists(st.ip_addresses().map(str), max_size=16, unique=True),
    hours=st.integers(1, 10_000),
)
def test_document_round_trips(mode: str, auth: str, max_age: int, pins: list[str],
                              addresses: list[str], hours: int) -> None:
    ad = Advertisement(HOST, auth, tuple(pins), mode, max_age,
                       tuple(str(ipaddress.ip_address(a)) for a in addresses))
    expires = NOW + dt.timedelta(hours=hours)
    assert parse_document(ad.document_bytes(expires), HOST.upper(), NOW) == (ad, expires)


# ---- DNS records and answers ------------------------------------------------------------

@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()),
                                 rsa.generate_private_key(public_exponent=65537, key_size=2048)])
def test_ipseckey_round_trip(key: keys.PrivateKey) -> None:
    rdata = ipseckey_rdata(key.public_key())
    auth, pin = records.ipseckey_public(rdata)
    assert pin == keys.spki_sha256(key)
    assert auth == ("ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsasig")
    assert str(rdata).startswith("10 0 3 . " if auth == "ecdsa" else "10 0 2 . ")
    tlsa = dns.rdata.from_text("IN", "TLSA", f"3 1 1 {pin}")
    assert records.tlsa_pin(tlsa) == pin  # type: ignore[arg-type]
    assert records.tlsa_pin(dns.rdata.from_text("IN", "TLSA", f"2 0 1 {pin}")) is None  # type: ignore[arg-type]


def _reply(rcode: int, ad: bool = False, ede: list[int] | None = None) -> dns.message.Message:
    query = dns.message.make_query("_oe.peer.example.org.", "TXT", want_dnssec=True)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if ad:
        reply.flags |= dns.flags.AD
    if ede:
        reply.use_edns(0, options=[dns.edns.EDEOption(code) for code in ede])
    return reply


@pytest.mark.parametrize(
    ("reply", "trusted", "expected"),
    [
        (_reply(dns.rcode.SERVFAIL, ede=[9]), True, Security.BOGUS),
        (_reply(dns.rcode.SERVFAIL, ede=[6]), True, Security.BOGUS),
        (_reply(dns.rcode.SERVFAIL, ede=[22]), True, Security.UNREACHABLE),
        (_reply(dns.rcode.SERVFAIL), True, Security.UNREACHABLE),  # no EDE: not proof of bogus
        (_reply(dns.rcode.NXDOMAIN, ad=True), True, Security.SECURE),
        (_reply(dns.rcode.NOERROR, ad=True), False, Security.INSECURE),  # AD from afar: ignored
        (_reply(dns.rcode.REFUSED), True, Security.UNREACHABLE),
    ],
)
def test_classify(reply: dns.message.Message, trusted: bool, expected: Security) -> None:
    """The reply as the resolver client reads it off the wire."""
    qname = dns.name.from_text("_oe.peer.example.org.")
    parsed = dnswire.parse_reply(reply.to_wire(), dnswire.question_wire(qname, dns.rdatatype.TXT),
                                 qname)
    assert parsed is not None
    answer = classify(parsed, qname, dns.rdatatype.TXT, trusted)
    assert answer.security is expected and answer.empty


# ---- no-downgrade ---------------------------------------------------------------------

def _authenticated(mode: str = "enforce", ttl: int = 3600, at: dt.datetime = NOW) -> Result:
    ad = Advertisement(HOST, "ecdsa", (PIN,), mode, ttl)
    return Result(HOST, HOST, "authenticated", "https", ad, at + dt.timedelta(seconds=ttl),
                  ("192.0.2.7",))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["none", "bogus", "unreachable", "invalid"]),
                          st.integers(1, 7200)), max_size=8))
def test_failed_lookups_never_release_an_unexpired_enforce_peer(
    lookups: list[tuple[str, int]],
) -> None:
    entry: Entry | None = merge(None, _authenticated(), NOW)
    for status, offset in sorted(lookups, key=lambda x: x[1]):
        at = NOW + dt.timedelta(seconds=offset)
        entry = merge(entry, Result(HOST, HOST, status, reasons=[status]), at)
        decision = entry.effective(at)
        assert decision.authenticated == (offset < 3600)
        assert entry.held == (offset < 3600)


def test_published_mode_none_releases_at_once() -> None:
    entry = merge(None, _authenticated(), NOW)
    released = Result(HOST, HOST, "none", "dns",
                      Advertisement(HOST, "ecdsa", (), "none", 300), NOW + dt.timedelta(seconds=300))
    after = merge(entry, released, NOW + dt.timedelta(seconds=10))
    assert not after.effective(NOW + dt.timedelta(seconds=10)).authenticated
    assert Entry.from_json(json.loads(json.dumps(after.to_json()))) == after


# ---- CIDR groups and rendering ------------------------------------------------------------

networks = st.ip_addresses(v=4).flatmap(
    lambda ip: st.integers(0, 32).map(lambda p: str(ipaddress.ip_network(f"{ip}/{p}", strict=False))))


@given(st.lists(networks, max_size=30))
def test_canonical_groups_are_sorted_unique_and_stable(cidrs: list[str]) -> None:
    once = model.canonical(cidrs)
    assert once == model.canonical(once) == model.canonical(reversed(cidrs))
    assert len(once) == len(set(once)) == len(set(cidrs))


@given(st.lists(networks, max_size=12), st.lists(networks, max_size=12),
       st.lists(networks, max_size=12))
def test_rendered_groups_hold_exactly_their_cidrs_and_conflicts_are_found(
    clear: list[str], block: list[str], null: list[str],
) -> None:
    policy = model.build(null_ranges=null, clear=clear, block=block, never_locked_out=[],
                         decisions=[], static_peers=[], responder=None)
    files = render.render(policy, NOW)
    for group, cidrs in policy.groups.items():
        lines = [ln for ln in files[f"policies/{group}"].splitlines() if not ln.startswith("#")]
        # Highest first, the order in which pluto 4.10 reloads a group incrementally.
        assert lines == cidrs[::-1]
        assert all(str(ipaddress.ip_network(c)) == c for c in lines)
    shared = (set(model.canonical(clear)) & set(model.canonical(null))) | (
        set(model.canonical(block)) - set(model.canonical(clear))) & set(model.canonical(null))
    assert bool(model.group_conflicts(policy.groups)) == bool(shared)


def test_peer_conn_binds_the_name_and_skips_exceptions_and_ipv6() -> None:
    policy = model.build(
        null_ranges=["0.0.0.0/0"], clear=["198.51.100.0/24"], block=[],
        never_locked_out=["192.0.2.53"], decisions=[],
        static_peers=[("a.example.org", "192.0.2.1", "ecdsa", "enforce"),
                      ("b.example.org", "198.51.100.9", "ecdsa", "enforce"),
                      ("c.example.org", "2001:db8::1", "ecdsa", "testing")],
        responder=None)
    assert [p.fqdn for p in policy.peers] == ["a.example.org"]
    assert any("never-locked-out" in n for n in policy.notes)
    assert any("IPv6" in n for n in policy.notes)
    assert "192.0.2.53/32" in policy.groups["oeagent-clear"]
    conf = render.render(policy, NOW)["oeagent.conf"]
    assert "right=192.0.2.1\n\trightid=@a.example.org\n\trightauth=ecdsa" in conf


def test_render_refuses_anything_but_single_tokens() -> None:
    bad = model.PeerConn("oeagent-peer-x", "x.example.org\n\tauthby=never", "192.0.2.1",
                         "ecdsa", "enforce", "config")
    policy = model.Policy(groups={g: [] for g in model.GROUPS}, peers=[bad])
    with pytest.raises(ValueError, match="refusing to render"):
        render.render(policy, NOW)


# ---- peers given by address ---------------------------------------------------------------

def _fake_dns(monkeypatch: pytest.MonkeyPatch, zone: dict[tuple[str, str], tuple[str, list[str]]]) -> None:
    """Answer discovery's queries from ``zone``: (name, type) -> (security, rdata texts)."""
    import dns.rdata
    import dns.rdataclass
    import dns.rrset

    from oeagent.discovery import lookup
    from oeagent.resolver import Answer

    def fake_query(resolver: object, name: object, rdtype: str) -> Answer:
        qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(str(name))
        security, texts = zone.get((str(qname), rdtype), ("secure", []))
        rrset = None
        if texts:
            rrset = dns.rrset.from_text_list(qname, 60, dns.rdataclass.IN, rdtype, texts)
        return Answer(qname, dns.rdatatype.from_text(rdtype), Security(security), rrset)

    monkeypatch.setattr(lookup, "query", fake_query)


def _discoverer() -> Any:
    from oeagent.config import DiscoveryConfig
    from oeagent.discovery.lookup import Discoverer

    return Discoverer(DiscoveryConfig(https=False))


def test_address_peer_needs_a_signed_ptr_that_maps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ad = Advertisement(HOST, "ecdsa", (keys.spki_sha256(key),))
    reverse = "7.2.0.192.in-addr.arpa."
    signed = {
        (reverse, "PTR"): ("secure", [f"{HOST}."]),
        (f"{HOST}.", "A"): ("secure", ["192.0.2.7"]),
        (f"_oe.{HOST}.", "TXT"): ("secure", [f'"{ad.txt()}"']),
        (f"_500._udp.{HOST}.", "TLSA"): ("secure", [f"3 1 1 {ad.pins[0]}"]),
        # RFC 4025: the IPSECKEY may sit at the reverse name.
        (reverse, "IPSECKEY"): ("secure", [str(ipseckey_rdata(key.public_key()))]),
    }
    _fake_dns(monkeypatch, signed)
    result = _discoverer().lookup("192.0.2.7", NOW)
    assert (result.status, result.fqdn, result.source) == ("authenticated", HOST, "dns")
    assert result.advertisement is not None and result.advertisement.pins == ad.pins

    _fake_dns(monkeypatch, {**signed, (reverse, "PTR"): ("insecure", [f"{HOST}."])})
    result = _discoverer().lookup("192.0.2.7", NOW)
    assert result.status == "none" and "no DNSSEC-signed PTR" in result.reasons[0]

    for forward in (("secure", ["192.0.2.8"]), ("insecure", ["192.0.2.7"])):
        _fake_dns(monkeypatch, {**signed, (f"{HOST}.", "A"): forward})
        result = _discoverer().lookup("192.0.2.7", NOW)
        assert result.status == "none" and "does not map back" in result.reasons[0]

    _fake_dns(monkeypatch, {**signed, (reverse, "PTR"): ("bogus", [])})
    assert _discoverer().lookup("192.0.2.7", NOW).status == "bogus"


def test_due_peers() -> None:
    from oeagent.discovery.cache import PeerCache
    from oeagent.discovery.entries import Timing

    cache = PeerCache.__new__(PeerCache)
    cache.entries = {
        "held": merge(None, _authenticated(ttl=3600), NOW),
        "none": merge(None, Result("none", "none.example.org", "none"), NOW),
        "bogus": merge(None, Result("bogus", "bogus.example.org", "bogus"), NOW),
    }
    minute, day = dt.timedelta(minutes=5), dt.timedelta(days=1)
    timing = Timing(minute, day)
    assert cache.due(NOW + dt.timedelta(minutes=1), timing) == []
    assert cache.due(NOW + dt.timedelta(minutes=10), timing) == ["bogus"]
    assert cache.due(NOW + dt.timedelta(minutes=46), timing) == ["bogus", "held"]
    assert cache.due(NOW + day, timing) == ["bogus", "held", "none"]


def test_ipv6_gets_its_own_group_conns_when_the_host_has_an_ipv6_route() -> None:
    kwargs: dict[str, Any] = dict(
        null_ranges=["0.0.0.0/0", "::/0"], clear=["2001:db8:53::/48"], block=[],
        never_locked_out=["192.0.2.53", "2001:db8::53"], decisions=[],
        static_peers=[("c.example.org", "2001:db8::1", "ecdsa", "testing")],
        responder=model.Responder("me.example.org", "oeagent", "ecdsa"))
    without = model.build(**kwargs)
    assert set(without.groups) == set(model.GROUPS) and not without.peers
    assert without.groups["oeagent-private-or-clear"] == ["0.0.0.0/0"]
    assert any("no IPv6 default route" in n for n in without.notes)
    both = model.build(**kwargs, ipv6=True)
    assert both.groups["oeagent-private-or-clear-6"] == ["::/0"]
    assert both.groups["oeagent-clear-6"] == ["2001:db8::53/128", "2001:db8:53::/48"]
    assert both.groups["oeagent-clear"] == ["192.0.2.53/32"]
    assert not model.group_conflicts(both.groups)
    files = render.render(both, NOW)
    conf = files["oeagent.conf"]
    for conn in ("oeagent-clear-6", "oeagent-private-or-clear-6", "oeagent-responder-6",
                 "oeagent-peer-c_example_org-1"):
        block = conf.split(f"conn {conn}\n", 1)[1].split("\nconn ", 1)[0]
        assert "hostaddrfamily=ipv6" in block
    # A testing peer is a one-address opportunistic group (README "OE policy").
    assert files["policies/oeagent-peer-c_example_org-1"].splitlines()[1:] == ["2001:db8::1/128"]
    assert model.group_conflicts({"oeagent-clear": ["::/0"]})  # a range in the wrong family


@pytest.mark.parametrize(("peer", "says"), [
    # Refused as an address (a zone index), it was then reported as "an IP address, not a
    # host name": true, and no help.
    ("fe80::1%eth0", "not a name or address: it has a zone index (after the '%'); give the "
                     "plain address"),
    ("a..example.org", "not a name or address: it "),
])
def test_a_refused_peer_says_why_without_repeating_itself(peer: str, says: str) -> None:
    from oeagent.config import DiscoveryConfig
    from oeagent.discovery.lookup import Discoverer

    result = Discoverer(DiscoveryConfig()).lookup(peer, NOW)
    assert result.status == "invalid" and result.refused
    assert result.reasons[0].startswith(says), result.reasons
    assert repr(peer) not in result.reasons[0]
