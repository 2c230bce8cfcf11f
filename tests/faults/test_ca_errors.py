"""Error answers from the real CA: each problem document below is one Pebble 2.4 really sends
(read from its source, wfe/wfe.go and va/va.go), provoked in the fault lab's Pebble.

Pebble 2.4 has no rate limits, so ``rateLimited`` with Retry-After is the one answer that
comes from a test double of the CA's reply; its test name says so. Pebble's ``malformed``
answers for names (illegal characters, a wildcard not leftmost, an IP as a DNS name, a
trailing dot) cannot be provoked: oeagent refuses such names in its config before any
request (oeagent/names.py is stricter than Pebble).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from acme import client as acme_client
from acme import messages

from lab import Lab
from oeagent.ca.client import _Network, get_directory, make_network, translated
from oeagent.errors import AcmeError
from oeagent.keys import load_key_pem
from oeagent.state import StateDir
from tests.faults.harness import Host, before, converges, fault, run, survived
from tests.integration.publish_support import fresh_name

pytestmark = pytest.mark.lab


@pytest.fixture
def defaults_after(lab: Lab) -> Iterator[None]:
    """The test restarts Pebble with settings of its own; the next test gets the lab's."""
    try:
        yield
    finally:
        lab.restart_pebble()


def account_dir(host: Host) -> Path:
    return StateDir(host.state).account_dir(host.config.acme.directory)


def registration(host: Host) -> tuple[acme_client.ClientV2, messages.RegistrationResource]:
    """The host's account as oeagent left it, with a client that speaks for it."""
    from josepy.jwk import JWKEC

    key = load_key_pem((account_dir(host) / "key.pem").read_bytes(), "account key")
    net = make_network(host.config.acme, JWKEC(key=key))
    client = acme_client.ClientV2(get_directory(host.config.acme, net), net)
    url = json.loads((account_dir(host) / "account.json").read_text())["url"]
    regr = client.query_registration(messages.RegistrationResource(
        uri=url, body=messages.Registration()))
    return client, regr


@fault("the CA refuses a name by policy (Pebble domainBlocklist: rejectedIdentifier)",
       "enroll --force", "exit 69 with the CA's rejectedIdentifier and the name; old "
       "certificate kept; rerun without the name converges")
def test_pebble_rejects_an_identifier(host: Host, lab: Lab, defaults_after: None) -> None:
    prior = before(host)
    refused = f"refused-{uuid.uuid4().hex[:8]}.oe.test"
    lab.restart_pebble_with(domain_blocklist=[refused])
    host.reconfigure({"host.names": [host.name, refused]})
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="rejectedIdentifier")
    assert refused in result.error, result.error
    host.reconfigure({})
    converges(host, "enroll", "--force", prior=prior)


@fault("the CA rejects every nonce (PEBBLE_WFE_NONCEREJECT=100)", "enroll --force",
       "exit 69 with the CA's badNonce after 16 tries per request, not an endless loop; old "
       "certificate kept; rerun converges")
def test_pebble_rejects_every_nonce(host: Host, lab: Lab, defaults_after: None) -> None:
    prior = before(host)
    lab.restart_pebble_with({"PEBBLE_WFE_NONCEREJECT": "100"})
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="badNonce")
    assert result.seconds < 30, result.seconds
    lab.restart_pebble()
    converges(host, "enroll", "--force", prior=prior)


@fault("the CA forgot the account (Pebble restarted: accountDoesNotExist)", "enroll --force",
       "recovers by itself: registers the same account key again, exit 0")
def test_pebble_forgot_the_account(host: Host, lab: Lab) -> None:
    prior = before(host)
    key_before = (account_dir(host) / "key.pem").read_bytes()
    lab.restart_pebble()
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={0}, serial_may_change=True)
    assert "created an ACME account" in [s["message"] for s in result.doc["steps"]]
    assert (account_dir(host) / "key.pem").read_bytes() == key_before
    converges(host, prior=prior)


@fault("the account was deactivated at the CA (unauthorized)", "enroll --force",
       "exit 69 saying the account is deactivated and how to start a new one; old "
       "certificate kept; once its key is moved aside a rerun registers anew and converges")
def test_deactivated_account(host: Host, lab: Lab) -> None:
    prior = before(host)
    client, regr = registration(host)
    client.deactivate_registration(regr)
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="deactivated")
    assert "unauthorized" in result.error and str(account_dir(host)) in result.error, \
        result.error
    shutil.move(account_dir(host), account_dir(host).with_name("deactivated"))
    converges(host, "enroll", "--force", prior=prior)


@fault("the CSR carries the account's own key (badCSR, RFC 8555 §11.1)", "enroll --force",
       "exit 69 with the CA's badCSR; old certificate kept; with its own account key back "
       "and a new certificate key (that CA now knows the old one as an account key) a "
       "rerun converges")
def test_csr_with_the_account_key(host: Host, lab: Lab) -> None:
    prior = before(host)
    # An operator "restored" the account from the certificate key: same key for both.
    saved = account_dir(host).with_name("saved")
    shutil.copytree(account_dir(host), saved)
    (account_dir(host) / "account.json").unlink()
    shutil.copy2(host.state / "keys" / "current.pem", account_dir(host) / "key.pem")
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="badCSR")
    shutil.rmtree(account_dir(host))
    saved.rename(account_dir(host))
    host.reconfigure({"key.reuse": False})
    converges(host, "enroll", "--force", prior=prior)


@fault("http-01 answered with the wrong content (authorization and order go invalid)",
       "enroll --force", "exit 69 naming the name and the CA's unauthorized; no challenge "
       "file left; old certificate kept; rerun converges")
def test_validation_fails_and_the_order_goes_invalid(host: Host, lab: Lab,
                                                     tmp_path: Path) -> None:
    prior = before(host)
    # A name never validated before: Pebble sometimes reuses a valid authorization despite
    # PEBBLE_AUTHZREUSE=0 (wfe.go: rand.Intn(100) > 0 is false one time in 100), and then
    # nothing would be validated and nothing could fail.
    fresh = fresh_name(lab)
    webroot, elsewhere = tmp_path / "webroot", tmp_path / "elsewhere"
    elsewhere.mkdir()
    host.reconfigure({"host.names": [fresh], "challenge.http.mode": "webroot",
                      "challenge.http.webroot": str(webroot)})
    # The web server Pebble reaches serves another directory: 404 for every token.
    with lab.serve_webroot(elsewhere):
        result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="unauthorized")
    assert fresh in result.error, result.error
    assert not list(webroot.rglob("*")) or not list(
        (webroot / ".well-known" / "acme-challenge").iterdir())
    host.reconfigure({})
    converges(host, "enroll", "--force", prior=prior)


@fault("rate limited: rateLimited with Retry-After (a CA double: Pebble 2.4 has no rate "
       "limits)", "renew", "the error keeps the CA's Retry-After; the next attempt is "
       "scheduled no sooner than it asks; the working certificate stays")
def test_rate_limited_from_a_ca_double_because_pebble_has_no_rate_limits(tmp_path: Path) -> None:
    from oeagent import renewstate
    from oeagent.renew import _record_failure
    from oeagent.report import Reporter
    from tests.unit.test_ari_renewal import NOW, cfg, make_cert, stored

    # Let's Encrypt's answer when a limit is hit: 429, a rateLimited problem, Retry-After.
    response = requests.Response()
    response.status_code = 429
    response.headers["Content-Type"] = "application/problem+json"
    response.headers["Retry-After"] = "3600"
    response._content = json.dumps({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": "too many certificates (5) already issued for this exact set of identifiers "
                  "in the last 168h0m0s"}).encode()
    with pytest.raises(AcmeError) as caught, translated("create an order", "https://ca.test/"):
        _Network(None)._check_response(response)
    error = caught.value
    assert error.code == "rateLimited" and error.retry_after == 3600
    assert "too many certificates" in str(error)

    state = StateDir(tmp_path / "state")
    state.ensure()
    cert = stored(make_cert(lifetime=dt.timedelta(days=90), not_before=NOW - dt.timedelta(
        days=60)))
    _record_failure(cfg(), state, cert, error, NOW, random.Random(0), Reporter(as_json=True))
    record = renewstate.load(state)
    assert record.next_attempt is not None
    assert record.next_attempt >= NOW + dt.timedelta(seconds=3600)
