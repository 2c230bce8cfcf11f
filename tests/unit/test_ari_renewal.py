"""ARI (RFC 9773) and the renewal rules, against recorded/constructed renewalInfo responses.

Debian's Pebble 2.4 has no renewalInfo, so every ARI test here talks to a TEST DOUBLE of the
CA: renewalInfo bodies as Let's Encrypt sends them, and a stub network for newOrder.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
import requests
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oeagent import config as config_module
from oeagent import renewal, renewstate
from oeagent.ca import order_replacing
from oeagent.ca.ari import AriClient, RenewalInfo, cert_id
from oeagent.ca.client import RETRY_AFTER_ATTR, _Network
from oeagent.certstore import StoredCertificate
from oeagent.config import RenewalConfig
from oeagent.errors import AcmeError
from oeagent.report import NullReporter
from oeagent.state import StateDir

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)

# Recorded from Let's Encrypt's renewalInfo endpoint (shape and headers; times adapted).
RECORDED_LE = {
    "suggestedWindow": {"start": "2026-12-20T10:00:00Z", "end": "2026-12-21T10:00:00Z"},
    "explanationURL": "https://community.letsencrypt.org/t/revocation-incident",
}


def make_cert(serial: int = 0x87654321, aki: bytes | None = None,
              lifetime: dt.timedelta = dt.timedelta(days=90),
              not_before: dt.datetime = NOW - dt.timedelta(days=1),
              key: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_before + lifetime)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), False))
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), False)
    return builder.sign(key, hashes.SHA256())


def test_cert_id_is_rfc9773_example() -> None:
    # RFC 9773 §4.1's worked example: AKI 69:88:5B:..., serial 00:87:65:43:21.
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert cert_id(make_cert(0x87654321, aki)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_cert_id_without_aki_is_a_clear_error() -> None:
    with pytest.raises(AcmeError, match="Authority Key Identifier"):
        cert_id(make_cert(aki=None))


def test_ari_with_recorded_renewalinfo_double_parses_window_and_retry_after() -> None:
    info = RenewalInfo.parse(RECORDED_LE, "21600", NOW)
    assert info.start == dt.datetime(2026, 12, 20, 10, tzinfo=dt.UTC)
    assert info.end - info.start == dt.timedelta(days=1)
    assert info.explanation_url and info.recheck_after == 21600
    # Retry-After clamped to [1 min, 1 day]; missing -> 6 h (RFC 9773 §4.3)
    assert RenewalInfo.parse(RECORDED_LE, "1", NOW).recheck_after == 60
    assert RenewalInfo.parse(RECORDED_LE, "999999", NOW).recheck_after == 86400
    assert RenewalInfo.parse(RECORDED_LE, None, NOW).recheck_after == 6 * 3600
    with pytest.raises(AcmeError, match="malformed"):
        RenewalInfo.parse({"suggestedWindow": {"start": "soon"}}, None, NOW)
    with pytest.raises(AcmeError, match="ends before"):
        RenewalInfo.parse({"suggestedWindow": {"start": "2026-12-21T00:00:00Z",
                                               "end": "2026-12-20T00:00:00Z"}}, None, NOW)


def test_ari_with_recorded_renewalinfo_double_window_selection_is_random_inside_and_stable() -> None:
    info = RenewalInfo.parse(RECORDED_LE, "3600", NOW)
    chosen = set()
    for seed in range(50):
        rec = renewal.with_ari(renewstate.RenewalRecord(serial="1"), info.start, info.end,
                               None, info.recheck_after, NOW, random.Random(seed))
        assert rec.ari is not None and info.start <= rec.ari.chosen <= info.end
        assert rec.ari.next_check == NOW + dt.timedelta(hours=1)
        chosen.add(rec.ari.chosen)
    assert len(chosen) > 40  # spread across the window, not one fixed point
    # Same window at the next check: the chosen time is kept (no re-roll every 6 hours)...
    first = renewal.with_ari(renewstate.RenewalRecord(), info.start, info.end, None, 60, NOW,
                             random.Random(1))
    again = renewal.with_ari(first, info.start, info.end, None, 60, NOW, random.Random(2))
    assert first.ari and again.ari and again.ari.chosen == first.ari.chosen
    # ...a moved window is chosen in afresh.
    moved = renewal.with_ari(first, info.start - dt.timedelta(days=5),
                             info.end - dt.timedelta(days=5), None, 60, NOW, random.Random(2))
    assert moved.ari and moved.ari.chosen <= info.end - dt.timedelta(days=5)


def cfg(**renewal_overrides: Any) -> config_module.Config:
    data: dict[str, Any] = {"host": {"names": ["a.example"]}, "renewal": renewal_overrides}
    return config_module.parse(data, base_dir=Path("/"))


def stored(cert: x509.Certificate) -> StoredCertificate:
    return StoredCertificate(cert, ())


def test_ari_with_constructed_renewalinfo_double_renew_now_when_window_in_past() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = stored(make_cert(key=key))
    past = renewal.with_ari(renewstate.RenewalRecord(), NOW - dt.timedelta(days=2),
                            NOW - dt.timedelta(days=1), None, 60, NOW, random.Random(0))
    decision = renewal.decide(cfg(), cert, key, NOW, past)
    assert decision.due and "renewal now" in decision.reason and decision.source == "ari"
    future = renewal.with_ari(renewstate.RenewalRecord(), NOW + dt.timedelta(days=2),
                              NOW + dt.timedelta(days=3), None, 60, NOW, random.Random(0))
    decision = renewal.decide(cfg(), cert, key, NOW, future)
    assert not decision.due and "ARI window" in decision.reason
    # ARI wins over the lifetime rule: a window long before the rule's time is honoured.
    early = renewal.with_ari(renewstate.RenewalRecord(), NOW - dt.timedelta(hours=1), NOW,
                             None, 60, NOW, random.Random(0))
    assert renewal.decide(cfg(), cert, key, NOW, early).due


def test_ari_with_recorded_renewalinfo_double_persists_across_restart(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    info = RenewalInfo.parse(RECORDED_LE, "7200", NOW)
    rec = renewal.with_ari(renewstate.RenewalRecord(serial="abc"), info.start, info.end,
                           info.explanation_url, info.recheck_after, NOW, random.Random(3))
    rec = renewal.after_failure(rec, RenewalConfig(), NOW, 3600.0, None, random.Random(0))
    renewstate.save(state, rec)
    again = renewstate.load(state)  # a new process reads the same schedule
    assert again.ari == rec.ari and again.next_attempt == rec.next_attempt
    assert again.ari is not None and again.ari.next_check == NOW + dt.timedelta(hours=2)
    assert again.for_serial("abc") == again and again.for_serial("new").ari is None
    (tmp_path / "state" / "renewal.json").write_text("{broken")
    assert renewstate.load(state) == renewstate.RenewalRecord()


def test_lifetime_rule_with_jitter_for_every_lifetime() -> None:
    for lifetime, fraction in ((dt.timedelta(hours=160), 0.5), (dt.timedelta(days=45), 1 / 3),
                               (dt.timedelta(days=90), 1 / 3), (dt.timedelta(minutes=1), 0.5)):
        cert = stored(make_cert(lifetime=lifetime, not_before=NOW))
        nominal = cert.not_after - lifetime * fraction
        assert renewal.renewal_time(cert) == nominal
        times = {renewal.jittered_time(cert, 0.05, random.Random(s)) for s in range(20)}
        assert all(nominal - lifetime * 0.05 <= t <= nominal for t in times)
        assert len(times) == 20


def test_backoff_doubles_caps_and_respects_remaining_time_and_retry_after() -> None:
    conf = RenewalConfig(retry_initial=60, retry_max=3600)
    rng = random.Random(0)
    delays = [renewal.backoff_seconds(n, conf, rng) for n in range(1, 10)]
    assert 45 <= delays[0] <= 75 and 90 <= delays[1] <= 150
    assert max(delays) <= 3600 * 1.25
    # a certificate with 800 s left: never wait more than 1/8 of it (plus jitter)
    assert renewal.backoff_seconds(9, conf, rng, time_left=800) <= 100 * 1.25
    rec = renewal.after_failure(renewstate.RenewalRecord(), conf, NOW, 7200.0,
                                NOW + dt.timedelta(days=1), rng)
    assert rec.failures == 1 and rec.next_attempt == NOW + dt.timedelta(seconds=7200)


def test_will_lapse_when_next_attempt_after_expiry() -> None:
    cert = stored(make_cert(lifetime=dt.timedelta(hours=2), not_before=NOW))
    rec = renewstate.RenewalRecord(failures=3, next_attempt=cert.not_after)
    assert renewal.will_lapse(rec, cert)
    assert not renewal.will_lapse(renewstate.RenewalRecord(failures=0), cert)


# ---- newOrder with `replaces`, against a constructed CA double -----------------------------

class _Response:
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.status_code = status
        self._body = body
        self.headers = headers
        self.ok = status < 400

    def json(self) -> dict[str, Any]:
        return self._body


class DoubleNetwork:
    """Stands in for ClientNetwork: records what was POSTed, answers like an ARI-capable CA."""

    def __init__(self, reject_replaces: bool) -> None:
        self.posted: list[dict[str, Any]] = []
        self.reject_replaces = reject_replaces

    def post(self, url: str, obj: Any, **kwargs: Any) -> _Response:
        payload = json.loads(obj.json_dumps())
        self.posted.append(payload)
        if self.reject_replaces and "replaces" in payload:
            raise messages.Error.from_json({
                "type": "urn:ietf:params:acme:error:alreadyReplaced",
                "detail": "certificate already replaced by another order"})
        body = {"status": "pending", "identifiers": payload["identifiers"],
                "authorizations": [], "finalize": "https://ca.test/finalize/1"}
        return _Response(201, body, {"Location": "https://ca.test/order/1"})


DIRECTORY = messages.Directory.from_json({
    "newNonce": "https://ca.test/nonce", "newAccount": "https://ca.test/acct",
    "newOrder": "https://ca.test/order", "revokeCert": "https://ca.test/revoke",
    "keyChange": "https://ca.test/key", "renewalInfo": "https://ca.test/renewal-info"})


def _csr() -> bytes:
    from acme import crypto_util
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return crypto_util.make_csr(pem, domains=["a.example"])


def test_ari_with_constructed_ca_double_sends_replaces_on_new_order() -> None:
    net = DoubleNetwork(reject_replaces=False)
    client = AriClient(DIRECTORY, net)  # type: ignore[arg-type]
    assert client.supports_ari()
    orderr, sent = order_replacing(client, _csr(), None, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
                                   "order", NullReporter())
    assert sent == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert net.posted == [{"identifiers": [{"type": "dns", "value": "a.example"}],
                           "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}]
    assert orderr.uri == "https://ca.test/order/1"


def test_ari_with_constructed_ca_double_already_replaced_retries_once_without() -> None:
    net = DoubleNetwork(reject_replaces=True)
    client = AriClient(DIRECTORY, net)  # type: ignore[arg-type]
    _, sent = order_replacing(client, _csr(), None, "x.y", "order", NullReporter())
    assert sent is None
    assert ["replaces" in p for p in net.posted] == [True, False]


def test_ca_double_409_already_replaced_becomes_a_problem_with_retry_after() -> None:
    # The library turns every 409 into an account ConflictError; ours keeps the ARI problem.
    response = requests.Response()
    response.status_code = 409
    response.headers["Content-Type"] = "application/problem+json"
    response.headers["Retry-After"] = "120"
    response._content = json.dumps({"type": "urn:ietf:params:acme:error:alreadyReplaced",
                                     "detail": "nope"}).encode()
    net = _Network(None)
    with pytest.raises(messages.Error) as info:
        net._check_response(response)
    assert getattr(info.value, RETRY_AFTER_ATTR) == "120"
    from oeagent.ca.client import translated

    with pytest.raises(AcmeError) as wrapped, translated("order", "https://ca.test/order"):
        raise info.value
    assert wrapped.value.code == "alreadyReplaced" and wrapped.value.retry_after == 120


def test_failed_renewal_that_would_lapse_says_so_loudly(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from oeagent.renew import _record_failure
    from oeagent.report import Reporter

    state = StateDir(tmp_path / "state")
    state.ensure()
    cert = stored(make_cert(lifetime=dt.timedelta(hours=1), not_before=NOW - dt.timedelta(
        minutes=50)))
    reporter = Reporter(as_json=True)
    rate_limited = AcmeError("too many certificates", code="rateLimited", retry_after=3600.0)
    _record_failure(cfg(), state, cert, rate_limited, NOW, random.Random(0), reporter)
    record = renewstate.load(state)
    assert record.failures == 1 and record.next_attempt == NOW + dt.timedelta(hours=1)
    assert record.last_failure is not None and record.last_failure.code == "rateLimited"
    assert [s.name for s in reporter.steps] == ["backoff", "lapse"]
    assert "WILL LAPSE" in reporter.steps[-1].message
    assert any(r.levelname == "CRITICAL" and "WILL LAPSE" in r.message for r in caplog.records)
