"""No-downgrade through a lookup that half fails: a held advertisement is replaced only by a
lookup that saw everything it acts on (the name's addresses; for a signed advertisement, the
DNS answer that would have kept it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from oeagent import keys
from oeagent.advertisement import Advertisement
from oeagent.config import DiscoveryConfig
from oeagent.discovery import lookup, wellknown
from oeagent.discovery.entries import Entry
from oeagent.discovery.holding import merge
from oeagent.discovery.lookup import Discoverer
from tests.integration.oe_peers import ipseckey_rdata
from tests.unit.test_discovery_units import _discoverer, _fake_dns

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
BANK = "bank.example"
V4, V6 = "198.51.100.10", "2001:db8::10"
KEY = ec.generate_private_key(ec.SECP256R1())
SIGNED = Advertisement(BANK, "ecdsa", (keys.spki_sha256(KEY),))


def signed_zone(**changes: tuple[str, list[str]]) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """bank.example, DNSSEC-signed, advertising enforce on both its addresses; ``changes``
    (by record type: A, AAAA, TXT, TLSA, IPSECKEY) replace one answer."""
    zone = {
        (f"{BANK}.", "A"): ("secure", [V4]),
        (f"{BANK}.", "AAAA"): ("secure", [V6]),
        (f"_oe.{BANK}.", "TXT"): ("secure", [f'"{SIGNED.txt()}"']),
        (f"_500._udp.{BANK}.", "TLSA"): ("secure", [f"3 1 1 {SIGNED.pins[0]}"]),
        (f"{BANK}.", "IPSECKEY"): ("secure", [str(ipseckey_rdata(KEY.public_key()))]),
    }
    for rdtype, answer in changes.items():
        [owner] = [k for k in zone if k[1] == rdtype]
        zone[owner] = answer
    return zone


def held(monkeypatch: pytest.MonkeyPatch, discoverer: Any) -> Entry:
    _fake_dns(monkeypatch, signed_zone())
    first = discoverer.lookup(BANK, NOW)
    assert (first.status, first.source, first.addresses) == ("authenticated", "dns", (V4, V6))
    return merge(None, first, NOW)


# ---- the name's addresses --------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["unreachable", "bogus"])
@pytest.mark.parametrize("failing", [("A",), ("AAAA",), ("A", "AAAA")])
def test_an_address_query_that_fails_does_not_take_addresses_from_a_held_peer(
        monkeypatch: pytest.MonkeyPatch, failure: str, failing: tuple[str, ...]) -> None:
    """Before: the advertisement records answered, the A (or AAAA) query timed out, and the
    lookup counted as authenticated with the addresses that were left: it replaced the held
    decision, so the peer lost its conn (and its drop) on the missing address -- with both
    queries failing, on every address -- long before its advertisement expired."""
    entry = held(monkeypatch, _discoverer())
    _fake_dns(monkeypatch, signed_zone(**{t: (failure, []) for t in failing}))
    later = NOW + dt.timedelta(minutes=2)  # within the TTL (min_cache, 300 s)
    result = _discoverer().lookup(BANK, later)
    after = merge(entry, result, later)
    decision = after.effective(later)
    assert decision.authenticated and decision.addresses == (V4, V6)
    assert after.held and after.last_status == failure
    assert any("kept the enforce advertisement" in r for r in after.reasons)


def test_first_contact_with_an_address_query_failing_uses_the_addresses_it_got(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is held yet: the addresses that did resolve are better than no conn at all."""
    _fake_dns(monkeypatch, signed_zone(AAAA=("unreachable", [])))
    entry = merge(None, _discoverer().lookup(BANK, NOW), NOW)
    assert entry.decision.authenticated and entry.decision.addresses == (V4,)


def test_a_lookup_that_sees_every_address_still_moves_a_held_peer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An address the name no longer has (a validated answer) goes at once."""
    entry = held(monkeypatch, _discoverer())
    _fake_dns(monkeypatch, signed_zone(AAAA=("secure", [])))
    later = NOW + dt.timedelta(minutes=2)  # within the TTL (min_cache, 300 s)
    after = merge(entry, _discoverer().lookup(BANK, later), later)
    assert not after.held and after.effective(later).addresses == (V4,)


def test_a_peer_given_by_address_whose_forward_query_fails_is_not_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the PTR was signed, the A query for its name timed out, and the peer was
    classified ``none`` (nothing published), retried only after max_cache."""
    reverse = "10.100.51.198.in-addr.arpa."
    _fake_dns(monkeypatch, {**signed_zone(A=("unreachable", [])),
                            (reverse, "PTR"): ("secure", [f"{BANK}."])})
    result = _discoverer().lookup(V4, NOW)
    assert result.status == "unreachable"
    assert f"{BANK} does not map back to {V4} (signed)" in result.reasons


# ---- HTTPS while the signed DNS answer is missing --------------------------------------------

def https_discoverer(monkeypatch: pytest.MonkeyPatch, document: Advertisement | None) -> Any:
    """A discoverer whose HTTPS fallback finds ``document`` (None: nothing published)."""
    def fetch(name: str, address: str, **_: Any) -> wellknown.Fetched:
        if document is None:
            return wellknown.Fetched(None, "connection refused", absent=True)
        return wellknown.Fetched(document.document_bytes(NOW + dt.timedelta(days=30)))

    monkeypatch.setattr(lookup.wellknown, "fetch", fetch)
    return Discoverer(DiscoveryConfig(https=True))


OTHER_KEY = "cd" * 32
DOCUMENTS = {
    "mode=none": Advertisement(BANK, "ecdsa", (), "none", 3600),
    "testing": Advertisement(BANK, "ecdsa", (OTHER_KEY,), "testing", 3600),
    "another key": Advertisement(BANK, "rsasig", (OTHER_KEY,), "enforce", 3600),
}
DNS_FAILURES = {
    "TXT timeout": {"TXT": ("unreachable", [])},
    "TXT bogus": {"TXT": ("bogus", [])},
    "TLSA timeout": {"TLSA": ("unreachable", [])},
    "TLSA missing (invalid)": {"TLSA": ("secure", [])},
}


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("dns_failure", DNS_FAILURES)
def test_https_does_not_replace_a_signed_advertisement_while_dns_fails(
        monkeypatch: pytest.MonkeyPatch, document: str, dns_failure: str) -> None:
    """Before: a DNS failure sent the lookup on to HTTPS, and whatever document it found
    (``mode=none`` included) replaced the held DNSSEC-signed advertisement: whoever can block
    the DNS answer and serve a document with a certificate for the name (a CA's weaker
    proof, the one the conflict rules rank below DNSSEC) released the peer or moved it to
    testing or to another key."""
    discoverer = https_discoverer(monkeypatch, DOCUMENTS[document])
    entry = held(monkeypatch, discoverer)
    _fake_dns(monkeypatch, signed_zone(**DNS_FAILURES[dns_failure]))  # type: ignore[arg-type]
    later = NOW + dt.timedelta(minutes=2)  # within the TTL (min_cache, 300 s)
    result = discoverer.lookup(BANK, later)
    assert result.source == "https"  # the document itself was fine
    after = merge(entry, result, later)
    assert after.held and after.effective(later) == entry.decision
    assert after.last_status in ("unreachable", "bogus", "invalid")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_https_replaces_a_signed_advertisement_that_dns_validly_withdrew(
        monkeypatch: pytest.MonkeyPatch, document: str) -> None:
    """A validated denial of the _oe record is the zone's own word: the document counts."""
    discoverer = https_discoverer(monkeypatch, DOCUMENTS[document])
    entry = held(monkeypatch, discoverer)
    _fake_dns(monkeypatch, signed_zone(TXT=("secure", [])))
    later = NOW + dt.timedelta(minutes=2)  # within the TTL (min_cache, 300 s)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert not after.held and after.decision.source == "https"
    assert after.decision.advertisement == DOCUMENTS[document]


def test_an_https_peer_is_refreshed_over_https_whatever_its_dns_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is about a signed advertisement: a peer held from a document is held to the
    document's proof, which a DNS failure does not weaken."""
    doc = DOCUMENTS["another key"]
    discoverer = https_discoverer(monkeypatch, doc)
    _fake_dns(monkeypatch, signed_zone(TXT=("insecure", [])))
    entry = merge(None, discoverer.lookup(BANK, NOW), NOW)
    assert entry.decision.source == "https"
    monkeypatch.setattr(lookup.wellknown, "fetch", lambda *a, **k: wellknown.Fetched(
        DOCUMENTS["mode=none"].document_bytes(NOW + dt.timedelta(days=30))))
    _fake_dns(monkeypatch, signed_zone(TXT=("unreachable", [])))
    later = NOW + dt.timedelta(minutes=2)  # within the TTL (min_cache, 300 s)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert not after.effective(later).authenticated


def test_a_peer_cached_before_its_proof_was_recorded_counts_as_signed_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """peers.json from before ``source`` existed: the held advertisement may be DNSSEC-signed,
    so a DNS failure does not let a document replace it either."""
    discoverer = https_discoverer(monkeypatch, DOCUMENTS["mode=none"])
    raw = held(monkeypatch, discoverer).to_json()
    del raw["source"]
    entry = Entry.from_json(raw)
    _fake_dns(monkeypatch, signed_zone(TXT=("unreachable", [])))
    later = NOW + dt.timedelta(minutes=2)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert after.held and after.effective(later).authenticated


# ---- the clock -------------------------------------------------------------------------------

def test_a_lookup_made_while_the_clock_is_set_back_does_not_shorten_the_hold() -> None:
    """Before: a lookup while the clock ran a day behind dated the advertisement's expiry by
    that clock, replacing the one held; once the clock was right again the peer had long
    expired and fell to NULL OE until a lookup got through -- on the first failed one."""
    ad = Advertisement(BANK, "ecdsa", (SIGNED.pins[0],), "enforce", 3600)

    def found(at: dt.datetime) -> lookup.Result:
        return lookup.Result(BANK, BANK, "authenticated", "dns", ad,
                             at + dt.timedelta(seconds=3600), (V4,))

    entry = merge(None, found(NOW), NOW)
    back = NOW - dt.timedelta(days=1)
    entry = merge(entry, found(back), back)
    assert entry.decision.held_until == NOW + dt.timedelta(hours=1)
    # ... and again while the clock is still behind: each lookup is then later than the last.
    still_back = back + dt.timedelta(minutes=45)
    entry = merge(entry, found(still_back), still_back)
    assert entry.decision.held_until == NOW + dt.timedelta(hours=1)
    right_again = NOW + dt.timedelta(minutes=10)
    entry = merge(entry, lookup.Result(BANK, BANK, "unreachable"), right_again)
    assert entry.held and entry.effective(right_again).authenticated
    # With the clock going forward as it should, a lookup still starts a new lifetime.
    later = NOW + dt.timedelta(minutes=20)
    assert merge(entry, found(later), later).decision.held_until == later + dt.timedelta(hours=1)


# ---- the cache file --------------------------------------------------------------------------

def _damaged(good: dict[str, Any]) -> dict[str, Any]:
    entry = next(iter(good["peers"].values()))
    return {
        "no peers": {k: v for k, v in good.items() if k != "peers"},
        "an empty object": {},
        "another version": {**good, "version": 99},
        "peers not an object": {**good, "peers": [entry]},
        "an entry without its status": {**good, "peers": {BANK: {
            k: v for k, v in entry.items() if k != "last_status"}}},
        "an advertisement with an unknown field": {**good, "peers": {BANK: {
            **entry, "advertisement": {**entry["advertisement"], "extra": 1}}}},
        "a time that is not one": {**good, "peers": {BANK: {**entry, "held_until": "soon"}}},
    }


@pytest.mark.parametrize("damage", _damaged({"peers": {BANK: {"advertisement": {}}}}))
def test_a_damaged_peer_cache_is_refused_not_read_as_empty(
        tmp_path: Any, damage: str) -> None:
    """Before: a peers.json without its ``peers`` (or an empty object) read as a cache with no
    peer, so the next refresh found every enforce peer changed to NULL OE and re-applied the
    policy without them; other damage ended in an internal error (KeyError, TypeError). Now
    each is a StateError naming the file, and nothing is re-applied."""
    from oeagent.discovery.cache import PeerCache
    from oeagent.errors import StateError
    from oeagent.state import StateDir

    state = StateDir(tmp_path)
    state.ensure()
    cache = PeerCache(state)
    cache.update(lookup.Result(BANK, BANK, "authenticated", "dns", SIGNED,
                               NOW + dt.timedelta(hours=1), (V4,)), NOW)
    cache.record_installed(cache.effective_keys(NOW), "digest")
    cache.save()
    good = state.read_json(cache.path)
    assert good is not None
    state.write_json(cache.path, _damaged(good)[damage])
    with pytest.raises(StateError, match=r"peers\.json"):
        PeerCache(state)


# ---- an HTTPS peer's addresses rest on unsigned DNS ------------------------------------------

PROXY = "203.0.113.66"


def unsigned_zone(*addresses: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """bank.example in an unsigned zone (no _oe record: HTTPS is its only proof)."""
    return {(f"{BANK}.", "A"): ("insecure", list(addresses)),
            (f"{BANK}.", "AAAA"): ("insecure", []),
            (f"_oe.{BANK}.", "TXT"): ("insecure", [])}


@pytest.mark.parametrize("listed", [(V4,), ()], ids=["document lists it", "document lists none"])
def test_a_forged_unsigned_answer_does_not_take_an_https_peers_address(
        monkeypatch: pytest.MonkeyPatch, listed: tuple[str, ...]) -> None:
    """Before: an attacker on the DNS path answered the peer's (unsigned) A query with an
    address of its own that relays TCP to the real server; the fetch got the genuine
    document through it, the addresses became the document's ∩ the forged answer (none; or,
    with a document listing none, only the relay), and that replaced the held decision: the
    enforce peer's real address fell to NULL OE, which the same attacker can intercept."""
    doc = Advertisement(BANK, "ecdsa", (OTHER_KEY,), "enforce", 3600, listed)
    discoverer = https_discoverer(monkeypatch, doc)
    _fake_dns(monkeypatch, unsigned_zone(V4))
    entry = merge(None, discoverer.lookup(BANK, NOW), NOW)
    assert entry.decision.source == "https" and entry.decision.addresses == (V4,)
    _fake_dns(monkeypatch, unsigned_zone(PROXY))
    later = NOW + dt.timedelta(minutes=2)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert after.held and after.effective(later) == entry.decision
    assert any(f"{V4} is no longer in {BANK}'s unsigned A/AAAA records" in r
               for r in after.reasons), after.reasons
    # Once the held advertisement expires, the answer counts as on first contact.
    expired = NOW + dt.timedelta(hours=1, minutes=1)
    assert merge(after, discoverer.lookup(BANK, expired), expired).decision.addresses == (
        () if listed else (PROXY,))


def test_an_https_peer_moves_when_its_document_drops_the_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The document is authenticated: an address it no longer lists goes at once."""
    discoverer = https_discoverer(
        monkeypatch, Advertisement(BANK, "ecdsa", (OTHER_KEY,), "enforce", 3600, (V4,)))
    _fake_dns(monkeypatch, unsigned_zone(V4))
    entry = merge(None, discoverer.lookup(BANK, NOW), NOW)
    discoverer = https_discoverer(
        monkeypatch, Advertisement(BANK, "ecdsa", (OTHER_KEY,), "enforce", 3600, (PROXY,)))
    _fake_dns(monkeypatch, unsigned_zone(PROXY))
    later = NOW + dt.timedelta(minutes=2)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert not after.held and after.decision.addresses == (PROXY,)


def test_an_https_peer_moves_when_a_signed_answer_drops_the_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed A/AAAA answer (no _oe record, a document instead) is validated: it counts."""
    discoverer = https_discoverer(monkeypatch, Advertisement(BANK, "ecdsa", (OTHER_KEY,)))
    signed = {**signed_zone(TXT=("secure", [])), (f"{BANK}.", "AAAA"): ("secure", [])}
    _fake_dns(monkeypatch, signed)
    entry = merge(None, discoverer.lookup(BANK, NOW), NOW)
    assert entry.decision.source == "https" and entry.decision.addresses == (V4,)
    _fake_dns(monkeypatch, {**signed, (f"{BANK}.", "A"): ("secure", [PROXY])})
    later = NOW + dt.timedelta(minutes=2)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert not after.held and after.decision.addresses == (PROXY,)


def test_an_unsigned_answer_of_the_other_family_does_not_hold_a_validated_move(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the family whose answer was unsigned is in doubt: a signed A answer that moved
    the peer counts although its AAAA answer is unsigned."""
    discoverer = https_discoverer(monkeypatch, Advertisement(BANK, "ecdsa", (OTHER_KEY,)))
    signed = {**signed_zone(TXT=("secure", [])), (f"{BANK}.", "AAAA"): ("insecure", [V6])}
    _fake_dns(monkeypatch, signed)
    entry = merge(None, discoverer.lookup(BANK, NOW), NOW)
    assert entry.decision.addresses == (V4, V6)
    _fake_dns(monkeypatch, {**signed, (f"{BANK}.", "A"): ("secure", [PROXY])})
    later = NOW + dt.timedelta(minutes=2)
    after = merge(entry, discoverer.lookup(BANK, later), later)
    assert not after.held and after.decision.addresses == (PROXY, V6)
