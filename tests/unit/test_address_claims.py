"""Who may claim an address: a document's addresses must be in the name's DNS, and one
name per address in the policy (DNSSEC over HTTPS, then the older claim, then the name)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oeagent import keys
from oeagent.advertisement import Advertisement
from oeagent.discovery import claims
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.entries import Decision, Entry
from oeagent.discovery.holding import merge
from oeagent.discovery.lookup import Discoverer, Result
from oeagent.policy import model, render
from oeagent.state import StateDir
from tests.integration.oe_peers import ipseckey_rdata
from tests.unit.test_discovery_units import _discoverer, _fake_dns

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
PIN = "ab" * 32
BANK, EVIL = "bank.example", "evil.example"
SHARED = "198.51.100.7"


def authenticated(name: str, source: str, addresses: tuple[str, ...], mode: str = "enforce",
                  ttl: int = 86_400, doc_addresses: tuple[str, ...] = ()) -> Result:
    ad = Advertisement(name, "ecdsa", (PIN,), mode, ttl, doc_addresses)
    return Result(name, name, "authenticated", source, ad, NOW + dt.timedelta(seconds=ttl),
                  addresses)


def build(decisions: list[Decision], static: list[tuple[str, str, str, str]] | None = None
          ) -> model.Policy:
    return model.build(null_ranges=["0.0.0.0/0"], clear=[], block=[], never_locked_out=[],
                       decisions=decisions, static_peers=static or [], responder=None)


def conns(policy: model.Policy) -> list[tuple[str, str, str]]:
    return [(p.fqdn, p.address, p.mode) for p in policy.peers]


# ---- rule 1: addresses come from the name's own DNS -----------------------------------------

def test_document_addresses_outside_the_names_dns_are_dropped_with_a_note() -> None:
    result = authenticated(EVIL, "https", ("203.0.113.5",))
    ad = Advertisement(EVIL, "ecdsa", (PIN,), addresses=("192.0.2.53", "203.0.113.5", SHARED))
    assert Discoverer._vouched(result, ad) == ("203.0.113.5",)
    assert result.notes == [
        f"HTTPS: {a} is in the document but not in {EVIL}'s A/AAAA records; dropped"
        for a in ("192.0.2.53", SHARED)]


def test_a_document_without_addresses_stands_for_the_dns_ones() -> None:
    result = authenticated(EVIL, "https", ("203.0.113.5", "2001:db8::5"))
    ad = Advertisement(EVIL, "ecdsa", (PIN,))
    assert Discoverer._vouched(result, ad) == ("203.0.113.5", "2001:db8::5")
    assert result.notes == []


def test_a_document_listing_only_foreign_addresses_gets_no_conn() -> None:
    result = authenticated(EVIL, "https", ("203.0.113.5",))
    result.addresses = Discoverer._vouched(
        result, Advertisement(EVIL, "ecdsa", (PIN,), addresses=(SHARED,)))
    assert result.addresses == () and result.notes
    assert build([merge(None, result, NOW).decision]).peers == []


def test_a_signed_advertisement_covers_only_signed_addresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ad = Advertisement(BANK, "ecdsa", (keys.spki_sha256(key),))
    zone = {
        (f"{BANK}.", "A"): ("secure", ["198.51.100.10"]),
        (f"{BANK}.", "AAAA"): ("insecure", ["2001:db8::10"]),  # e.g. through an unsigned CNAME
        (f"_oe.{BANK}.", "TXT"): ("secure", [f'"{ad.txt()}"']),
        (f"_500._udp.{BANK}.", "TLSA"): ("secure", [f"3 1 1 {ad.pins[0]}"]),
        (f"{BANK}.", "IPSECKEY"): ("secure", [str(ipseckey_rdata(key.public_key()))]),
    }
    _fake_dns(monkeypatch, zone)
    result = _discoverer().lookup(BANK, NOW)
    assert (result.status, result.source) == ("authenticated", "dns"), result.reasons
    assert result.addresses == ("198.51.100.10",)
    assert result.advertisement is not None
    assert result.advertisement.addresses == ("198.51.100.10",)
    assert result.notes == ["DNS: 2001:db8::10 is not DNSSEC-signed; not used for the signed "
                            "advertisement"]


# ---- rule 2: one name per address -----------------------------------------------------------

def test_dnssec_claim_beats_an_older_https_claim() -> None:
    evil = merge(None, authenticated(EVIL, "https", (SHARED, "203.0.113.5")), NOW).decision
    later = NOW + dt.timedelta(days=3)
    bank = merge(None, authenticated(BANK, "dns", (SHARED,)), later).decision
    policy = build([evil, bank])
    assert conns(policy) == [(EVIL, "203.0.113.5", "enforce"), (BANK, SHARED, "enforce")]
    [note] = [n for n in policy.notes if n.startswith("conflict:")]
    assert note.startswith(f"conflict: {SHARED} is claimed by {BANK} and {EVIL}: kept by "
                           f"{BANK} (DNSSEC since {later.isoformat()}), stronger proof")


@pytest.mark.parametrize("mode", ["enforce", "testing"])
def test_between_equals_the_first_claim_keeps_the_address_and_refreshes_do_not_move_it(
        mode: str) -> None:
    bank = merge(None, authenticated(BANK, "https", (SHARED,), mode=mode), NOW)
    evil = merge(None, authenticated(EVIL, "https", (SHARED,), mode=mode),
                 NOW + dt.timedelta(hours=1))
    # Both refresh later (the bank first): the claims keep their first dates, through a
    # round trip of peers.json too.
    for hours in (5, 20):
        at = NOW + dt.timedelta(hours=hours)
        bank = merge(bank, authenticated(BANK, "https", (SHARED,), mode=mode), at)
        evil = merge(evil, authenticated(EVIL, "https", (SHARED,), mode=mode), at)
        bank, evil = (Entry.from_json(json.loads(json.dumps(e.to_json()))) for e in (bank, evil))
        assert bank.decision.since == {SHARED: NOW}
        policy = build([evil.decision, bank.decision])
        assert conns(policy) == [(BANK, SHARED, mode)]  # the winner is not changed in any way
        assert any("claimed first" in n for n in policy.notes)


def test_a_testing_claim_never_takes_an_address_an_enforce_claim_protects() -> None:
    # Found in review: proof ranked first, so a later name with a signed zone, mode=testing
    # and its A record at an HTTPS enforce peer's address won it; its testing conn
    # (rightid=@evil) failed against the real peer and passed the traffic in clear.
    bank = merge(None, authenticated(BANK, "https", (SHARED,)), NOW).decision
    later = NOW + dt.timedelta(days=3)
    evil = merge(None, authenticated(EVIL, "dns", (SHARED,), mode="testing"), later).decision
    policy = build([evil, bank])
    assert conns(policy) == [(BANK, SHARED, "enforce")]
    assert policy.groups["oeagent-enforced"] == [f"{SHARED}/32"]
    [note] = [n for n in policy.notes if n.startswith("conflict:")]
    assert note.startswith(f"conflict: {SHARED} is claimed by {BANK} and {EVIL}: kept by "
                           f"{BANK} (HTTPS since {NOW.isoformat()}), enforce over testing")
    # The other way round: a later enforce claim takes a testing peer's address (at worst
    # the denial of service any winning impostor causes, never cleartext).
    bank = merge(None, authenticated(BANK, "dns", (SHARED,), mode="testing"), NOW).decision
    evil = merge(None, authenticated(EVIL, "https", (SHARED,)), later).decision
    assert conns(build([bank, evil])) == [(EVIL, SHARED, "enforce")]


def test_the_operators_testing_peer_keeps_its_address_against_a_discovered_enforce_one() -> None:
    evil = merge(None, authenticated(EVIL, "dns", (SHARED,)), NOW).decision
    policy = build([evil], static=[(BANK, SHARED, "ecdsa", "testing")])
    assert conns(policy) == [(BANK, SHARED, "testing")]
    assert any("the operator's word (policy.peers)" in n for n in policy.notes)


def test_a_failed_lookup_keeps_the_claim_and_a_release_ends_it() -> None:
    bank = merge(None, authenticated(BANK, "https", (SHARED,)), NOW)
    evil = merge(None, authenticated(EVIL, "https", (SHARED,)), NOW + dt.timedelta(hours=1))
    at = NOW + dt.timedelta(hours=2)
    bank = merge(bank, Result(BANK, BANK, "unreachable", reasons=["timeout"]), at)
    assert bank.held and conns(build([bank.effective(at), evil.effective(at)]))[0][0] == BANK
    released = Result(BANK, BANK, "none", "https",
                      Advertisement(BANK, "ecdsa", (), "none", 300), at)
    bank = merge(bank, released, at)
    assert conns(build([bank.effective(at), evil.effective(at)])) == [(EVIL, SHARED, "enforce")]
    # Claiming the address again starts a new claim: the one held meanwhile keeps it.
    again = NOW + dt.timedelta(hours=3)
    bank = merge(bank, authenticated(BANK, "https", (SHARED,)), again)
    assert bank.decision.since == {SHARED: again}
    assert conns(build([bank.effective(again), evil.effective(again)]))[0][0] == EVIL


def test_same_proof_same_age_is_decided_by_name_whatever_the_order() -> None:
    a = merge(None, authenticated("a.example", "https", (SHARED,)), NOW).decision
    b = merge(None, authenticated("b.example", "https", (SHARED,)), NOW).decision
    for order in ([a, b], [b, a]):
        policy = build(order)
        assert conns(policy) == [("a.example", SHARED, "enforce")]
        assert any("a tie (same proof, first seen together): kept by name order" in n
                   for n in policy.notes)


def test_configured_peers_beat_discovered_ones() -> None:
    bank = merge(None, authenticated(BANK, "dns", (SHARED,)), NOW).decision
    policy = build([bank], [("mine.example", SHARED, "rsasig", "testing")])
    assert conns(policy) == [("mine.example", SHARED, "testing")]
    assert any("kept by mine.example (policy.peers)" in n for n in policy.notes)


def test_one_name_claiming_an_address_twice_is_no_conflict() -> None:
    by_name = merge(None, authenticated(BANK, "dns", (SHARED,)), NOW).decision
    by_address = dataclasses.replace(by_name, peer=SHARED)
    policy = build([by_name, by_address], [(BANK, SHARED, "ecdsa", "enforce")])
    assert conns(policy) == [(BANK, SHARED, "enforce")]
    assert not any("conflict" in n for n in policy.notes)


def test_a_cache_written_before_claims_were_dated_loads_its_claims_as_the_oldest() -> None:
    old = merge(None, authenticated(BANK, "dns", (SHARED,)), NOW).to_json()
    del old["source"], old["since"]
    loaded = Entry.from_json(old).decision
    assert loaded.source == "" and loaded.since == {SHARED: claims.BEFORE_RECORDS}
    newer = merge(None, authenticated(EVIL, "https", (SHARED,)), NOW).decision
    assert conns(build([newer, loaded])) == [(BANK, SHARED, "enforce")]  # older wins
    # An unknown proof ranks as HTTPS: a DNSSEC claim made later still wins.
    signed = merge(None, authenticated(EVIL, "dns", (SHARED,)), NOW).decision
    assert conns(build([loaded, signed])) == [(EVIL, SHARED, "enforce")]



def test_a_names_strongest_claim_stands_for_it_whatever_the_order() -> None:
    weak = claims.Claim(BANK, SHARED, "https", NOW)
    strong = claims.Claim(BANK, SHARED, "config", NOW)
    rival = claims.Claim(EVIL, SHARED, "dns", NOW - dt.timedelta(days=1))
    for order in itertools.permutations([weak, strong, rival]):
        winners, conflicts = claims.resolve(order)
        assert winners[SHARED] == strong
        assert [(c.kept, c.lost) for c in conflicts] == [(strong, (rival,))]


def test_an_address_is_one_address_however_written_and_conflicts_come_in_address_order() -> None:
    found = [claims.Claim(name, address, "dns", NOW)
             for name, address in [(BANK, "2001:db8::7"), (EVIL, "2001:DB8:0::7"),
                                   (BANK, "10.0.0.2"), (EVIL, "10.0.0.2"),
                                   (BANK, "9.0.0.1"), (EVIL, "9.0.0.1")]]
    winners, conflicts = claims.resolve(found)
    assert list(winners) == ["9.0.0.1", "10.0.0.2", "2001:db8::7"]
    assert [c.address for c in conflicts] == ["9.0.0.1", "10.0.0.2", "2001:db8::7"]


def test_an_address_peer_that_now_names_another_host_starts_a_new_claim() -> None:
    entry = merge(None, dataclasses.replace(authenticated(BANK, "dns", (SHARED,)), peer=SHARED),
                  NOW)
    later = NOW + dt.timedelta(hours=1)
    entry = merge(entry, dataclasses.replace(authenticated(EVIL, "dns", (SHARED,)), peer=SHARED),
                  later)
    assert entry.decision.since == {SHARED: later}


def test_a_change_of_proof_alone_reapplies_the_policy(tmp_path: Path) -> None:
    """The proof decides contested addresses, so the installed policy depends on it."""
    state = StateDir(tmp_path)
    state.ensure()
    cache = PeerCache(state)
    cache.update(authenticated(BANK, "dns", (SHARED,)), NOW)
    cache.record_installed(cache.effective_keys(NOW), None)
    later = NOW + dt.timedelta(hours=1)
    assert cache.update(authenticated(BANK, "https", (SHARED,)), later)[1]
    assert cache.changed(later) == [BANK]

# ---- property: no address in two peer conns ------------------------------------------------

_names = st.sampled_from(["a.example", "b.example", "c.example", "d.example"])
_addresses = st.sampled_from(["198.51.100.1", "198.51.100.2", "203.0.113.9", "2001:db8::1",
                              "10.0.0.1"])
_decisions = st.builds(
    lambda name, source, addrs, mode, age: dataclasses.replace(
        merge(None, authenticated(name, source, tuple(dict.fromkeys(addrs)), mode),
              NOW - dt.timedelta(hours=age)).decision, peer=f"{name}#{age}"),
    _names, st.sampled_from(["dns", "https", ""]), st.lists(_addresses, max_size=4),
    st.sampled_from(["enforce", "testing"]), st.integers(0, 3))
_static = st.tuples(_names, _addresses, st.sampled_from(["ecdsa", "rsasig"]),
                    st.sampled_from(["enforce", "testing"]))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.lists(_decisions, max_size=8), st.lists(_static, max_size=3), st.booleans())
def test_no_address_is_ever_in_two_peer_conns(
    decisions: list[Decision], static: list[tuple[str, str, str, str]], ipv6: bool,
) -> None:
    later = NOW + dt.timedelta(minutes=1)
    policy = model.build(null_ranges=["0.0.0.0/0"], clear=["10.0.0.0/8"], block=[],
                         never_locked_out=[], decisions=decisions, static_peers=static,
                         responder=None, ipv6=ipv6)
    conf = render.render(policy, later)["oeagent.conf"]
    rights = Counter(a for a in re.findall(r"^\tright=(\S+)$", conf, flags=re.MULTILINE)
                     if not a.startswith("%"))
    assert all(n == 1 for n in rights.values()), rights
    # ... and the conn an address keeps is its strongest, then oldest, then first-named claim.
    owners, _ = claims.resolve(model.peer_claims(decisions, static))
    for p in policy.peers:
        assert owners[p.address].name == p.fqdn
    kept = {p.address for p in policy.peers}
    expected = {a for a in owners
                if not a.startswith("10.") and (ipv6 or ":" not in a)}
    assert kept == expected


def test_a_clock_set_back_does_not_date_a_new_claim_before_the_recorded_ones(
        tmp_path: Path) -> None:
    """Before: a new claim was dated with the clock as it was. With the clock set back (a
    host booting without a real-time clock, a bad NTP step), a name discovered now was dated
    before the bank's recorded claim and took its address: the bank lost its conn there."""
    state = StateDir(tmp_path)
    state.ensure()
    cache = PeerCache(state)
    cache.update(authenticated(BANK, "https", (SHARED,)), NOW)
    cache.save()
    back = NOW - dt.timedelta(days=1)
    cache = PeerCache(state)
    evil = dataclasses.replace(authenticated(EVIL, "https", (SHARED,)),
                               expires=back + dt.timedelta(days=1))
    other = dataclasses.replace(authenticated("aaa.example", "https", (SHARED,)),
                                expires=back + dt.timedelta(days=1))
    cache.update(evil, back)
    cache.update(other, back)
    cache.save()
    decisions = PeerCache(state).decisions(back)
    assert conns(build(decisions)) == [(BANK, SHARED, "enforce")]
    # Claims first recorded in one run still tie with each other (decided by name).
    [conflict] = claims.resolve(model.peer_claims(decisions))[1]
    assert [c.name for c in conflict.lost] == ["aaa.example", EVIL]
    assert conflict.lost[0].since == conflict.lost[1].since > NOW


def test_a_claim_held_at_the_real_time_keeps_its_date_when_the_clock_is_behind(
        tmp_path: Path) -> None:
    """The date given to a new claim (after the newest on record) is not the time at which
    the held decision is judged: a claim held until just after that date stays the same."""
    state = StateDir(tmp_path)
    state.ensure()
    cache = PeerCache(state)
    cache.update(dataclasses.replace(authenticated(BANK, "https", (SHARED,)),
                                     expires=NOW + dt.timedelta(hours=1)), NOW)
    newest = NOW + dt.timedelta(hours=2)
    cache.update(authenticated(EVIL, "https", ("203.0.113.5",)), newest)
    cache.save()
    back = NOW + dt.timedelta(minutes=30)  # the bank's claim is held until NOW + 1 h
    cache = PeerCache(state)
    entry, _ = cache.update(authenticated(BANK, "https", (SHARED, "203.0.113.9")), back)
    assert entry.decision.since == {SHARED: NOW,
                                    "203.0.113.9": newest + dt.timedelta(microseconds=1)}
