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
from oeagent.discovery.cache import Entry, merge
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
