"""DNS under faults while publishing: the primary silent, the validating resolver silent or
gone, a zone whose signatures do not validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import Lab
from tests.faults.harness import Host, before, converges, fault, new_host, run, survived

pytestmark = pytest.mark.lab


def change_mode(host: Host) -> None:
    """Make publishing have something to do: the mode goes from enforce to testing."""
    host.reconfigure({"publish.mode": "testing"})


@fault("BIND answers slower than publish.dns.timeout (SIGSTOP)", "publish",
       "exit 69 saying the primary did not answer; no record changed; rerun converges")
def test_bind_silent_during_publish(host: Host, lab: Lab) -> None:
    prior = before(host)
    change_mode(host)
    with lab.paused("named"):
        result = run(host, "publish")
    survived(host, result, prior, exit_codes={69})
    converges(host, "publish", prior=prior)


@fault("unbound silent while verifying (SIGSTOP)", "publish",
       "records applied as one update; verification fails after publish.verify_timeout, "
       "exit 1; rerun converges")
def test_unbound_silent_during_verify(host: Host, lab: Lab) -> None:
    prior = before(host)
    change_mode(host)
    host.reconfigure({"publish.mode": "testing", "publish.verify_timeout": 2})
    with lab.paused("unbound"):
        result = run(host, "publish")
    survived(host, result, prior, exit_codes={1, 69}, dns_changed=True)
    # The reason is in the message, and publish.verify_timeout bounds the wait (it was one
    # resolver timeout per rrset, 12 s here, and the message said only "not visible").
    assert "UNREACHABLE" in result.error and "#" in result.error, result.error
    # Slack for start-up on a loaded machine; the unbounded wait this guards against was 12 s.
    assert result.seconds < 2 + 8, result.seconds
    host.reconfigure({"publish.mode": "testing"})
    converges(host, "publish", prior=prior)


@fault("unbound down (nothing listens on publish.resolver_port)", "publish --verify",
       "exit non-zero: verification failed, resolver unreachable; nothing changed")
def test_unbound_down_for_verify(host: Host, lab: Lab) -> None:
    prior = before(host)
    host.reconfigure({"publish.resolver_port": 9, "publish.verify_timeout": 1})
    result = run(host, "publish", "--verify")
    survived(host, result, prior, exit_codes={1, 69})
    assert "UNREACHABLE" in result.error and "#9" in result.error, result.error
    assert result.seconds < 1 + 8, result.seconds  # start-up slack, as above
    host.reconfigure({})
    converges(host, "publish", prior=prior)


@fault("bogus DNSSEC signatures in the published zone (bogus.oe.test)", "publish",
       "the update is applied but verification fails (no AD / SERVFAIL), exit non-zero; "
       "the certificate is untouched")
def test_bogus_signature_fails_verification(lab: Lab, tmp_path: Path) -> None:
    host = new_host(lab, tmp_path, zone="bogus.oe.test", publish=False)
    try:
        prior = before(host)
        host.reconfigure({"publish.backends": ["rfc2136"], "publish.verify_timeout": 2,
                          "publish.dns.zone": "bogus.oe.test"})
        result = run(host, "publish")
        survived(host, result, prior, exit_codes={1, 69}, dns_changed=True)
        # The update went in (the primary serves it); the validating resolver refuses it.
        assert "applied, but not visible" in result.error and "SERVFAIL" in result.error, \
            result.error
    finally:
        host.cleanup()
