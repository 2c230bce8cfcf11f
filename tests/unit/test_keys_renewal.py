"""Keys and the renewal decision."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from oeagent import config, keys, renewal, renewstate
from oeagent.certstore import StoredCertificate, load_current, save
from oeagent.errors import StateError
from oeagent.state import StateDir

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def make_cert(key: keys.PrivateKey, names: list[str], start: dt.datetime, lifetime: dt.timedelta) -> x509.Certificate:
    issuer_key = keys.generate_key("ecdsa-p256")
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_key_round_trip_and_pin(algorithm: str) -> None:
    key = keys.generate_key(algorithm)
    again = keys.load_key_pem(keys.key_to_pem(key))
    assert keys.key_algorithm(again) == algorithm
    assert keys.spki_sha256(again) == keys.spki_sha256(key)
    assert len(keys.spki_sha256(key)) == 64


def test_garbage_key_is_a_state_error() -> None:
    with pytest.raises(StateError, match="cannot read the certificate key"):
        keys.load_key_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "certificate key")


def cfg(names: tuple[str, ...] = ("a.example",)) -> config.Config:
    return config.parse({"host": {"names": list(names)}}, base_dir=Path("/"))


@pytest.mark.parametrize(
    ("lifetime", "age", "due"),
    [
        (dt.timedelta(days=90), dt.timedelta(days=59), False),
        (dt.timedelta(days=90), dt.timedelta(days=61), True),
        (dt.timedelta(days=45), dt.timedelta(days=29), False),
        (dt.timedelta(days=45), dt.timedelta(days=31), True),
        (dt.timedelta(hours=160), dt.timedelta(hours=79), False),
        (dt.timedelta(hours=160), dt.timedelta(hours=81), True),
        (dt.timedelta(days=90), dt.timedelta(days=91), True),
    ],
)
def test_renewal_is_lifetime_relative(lifetime: dt.timedelta, age: dt.timedelta, due: bool) -> None:
    key = keys.generate_key("ecdsa-p256")
    cert = StoredCertificate(make_cert(key, ["a.example"], NOW - age, lifetime), ())
    assert renewal.decide(cfg(), cert, key, NOW).due is due


def test_renewal_due_when_names_or_key_change() -> None:
    key = keys.generate_key("ecdsa-p256")
    cert = StoredCertificate(make_cert(key, ["a.example"], NOW, dt.timedelta(days=90)), ())
    assert not renewal.decide(cfg(), cert, key, NOW).due
    assert renewal.decide(cfg(("a.example", "b.example")), cert, key, NOW).due
    assert renewal.decide(cfg(), cert, keys.generate_key("ecdsa-p256"), NOW).due
    assert renewal.decide(cfg(), None, key, NOW).reason == "no certificate issued yet"


def test_certstore_pointer_written_last(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    key = keys.generate_key("ecdsa-p256")
    first = save(state, make_cert(key, ["a.example"], NOW, dt.timedelta(days=90)), ())
    loaded = load_current(state)
    assert loaded is not None and loaded.serial_hex == first.serial_hex
    assert (state.cert_dir(first.serial_hex) / "fullchain.pem").stat().st_mode & 0o777 == 0o600
    (state.cert_dir(first.serial_hex) / "cert.pem").unlink()
    with pytest.raises(StateError, match="incomplete"):
        load_current(state)


def test_clock_behind_only_past_ntp_skew() -> None:
    key = keys.generate_key("ecdsa-p256")
    cert = StoredCertificate(make_cert(key, ["a.example"], NOW, dt.timedelta(days=90)), ())
    assert renewal.clock_behind(None, NOW) is None
    assert renewal.clock_behind(cert, NOW) is None
    assert renewal.clock_behind(cert, NOW - dt.timedelta(minutes=4)) is None  # NTP-level skew
    hours = renewal.clock_behind(cert, NOW - dt.timedelta(hours=3))
    assert hours is not None and "about 3.0 hours later" in hours
    days = renewal.clock_behind(cert, NOW - dt.timedelta(days=365))
    assert days is not None and "clock is behind" in days and "about 365 days later" in days


@pytest.mark.parametrize("stored", [dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
                                    dt.datetime(1, 1, 1, tzinfo=dt.UTC)])
def test_a_stored_fallback_time_outside_the_lifetime_rule_is_not_trusted(
        stored: dt.datetime) -> None:
    """renewal.json's fallback_at is drawn once inside [rule - jitter, rule]; a value far
    outside it is damage. Taken as it was, year 9999 kept the certificate 'not due' until it
    expired -- with status saying nothing."""
    key = keys.generate_key("ecdsa-p256")
    cert = StoredCertificate(make_cert(key, ["a.example"], NOW - dt.timedelta(days=70),
                                       dt.timedelta(days=90)), ())
    record = renewstate.RenewalRecord(serial=cert.serial_hex, fallback_at=stored)
    decision = renewal.decide(cfg(), cert, key, NOW, record)
    assert decision.due and decision.renew_after == renewal.renewal_time(cert)
    fixed = renewal.with_fallback_time(record, cert, cfg().renewal, random.Random(1))
    assert fixed.fallback_at is not None
    assert cert.not_before < fixed.fallback_at <= renewal.renewal_time(cert)
