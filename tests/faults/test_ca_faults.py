"""The ACME CA under faults, against the real Pebble of the fault lab."""

from __future__ import annotations

import threading

import pytest

from lab import Lab
from tests.faults.harness import Host, before, converges, fault, run, run_until, survived
from tests.integration.publish_support import fresh_name

pytestmark = pytest.mark.lab


@fault("Pebble killed in the middle of an order", "enroll --force",
       "exit 69 naming the CA; old certificate kept; rerun after the CA is back re-finds or "
       "re-creates the account and converges")
def test_pebble_killed_mid_order(host: Host, lab: Lab) -> None:
    prior = before(host)
    # A name never validated before: the host's own name was validated by this account,
    # and Pebble sometimes reuses that authorization despite PEBBLE_AUTHZREUSE=0; with
    # nothing to validate it could issue before the kill lands, and the run would succeed.
    host.reconfigure({"host.names": [host.name, fresh_name(lab)]})
    try:
        result = run_until(host, "[order]", lambda: lab.kill("pebble"), "enroll", "--force")
        survived(host, result, prior, exit_codes={69})
    finally:
        lab.restart_pebble()
    # The new Pebble has a new root: the config's trust anchors file is rewritten by the lab.
    host.reconfigure({})
    converges(host, "enroll", "--force", prior=prior)


@fault("CA stops answering (slower than acme.network_timeout)", "enroll --force",
       "exit 69 after the network timeout; old certificate kept; rerun converges")
def test_pebble_slower_than_the_timeout(host: Host, lab: Lab) -> None:
    prior = before(host)
    with lab.paused("pebble"):
        result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error="")
    converges(host, "enroll", "--force", prior=prior)


@fault("CA validates slowly (PEBBLE_VA_SLEEPTIME=3)", "enroll --force",
       "recovers by itself: polls with backoff until valid, exit 0")
def test_pebble_slow_validation(host: Host, lab: Lab) -> None:
    prior = before(host)
    lab.restart_pebble_with({"PEBBLE_VA_SLEEPTIME": "3"})
    try:
        result = run(host, "enroll", "--force")
        survived(host, result, prior, exit_codes={0}, serial_may_change=True)
        # The restarted Pebble knows no authorization to reuse: the slow validation ran.
        assert "challenge" in [s["step"] for s in result.doc["steps"]], result.doc["steps"]
    finally:
        lab.restart_pebble()
    converges(host, prior=prior)


@fault("CA rejects 50 % of nonces (PEBBLE_WFE_NONCEREJECT=50)", "enroll --force",
       "recovers by itself: badNonce is retried (up to 16 tries per request), exit 0 six "
       "times in a row")
def test_pebble_rejects_half_the_nonces(host: Host, lab: Lab) -> None:
    prior = before(host)
    lab.restart_pebble_with({"PEBBLE_WFE_NONCEREJECT": "50"})
    try:
        for _ in range(6):
            result = run(host, "enroll", "--force")
            survived(host, result, prior, exit_codes={0}, serial_may_change=True)
    finally:
        lab.restart_pebble()
    converges(host, prior=prior)


@fault("two enroll runs at once", "enroll --force (twice)",
       "one waits for the lock (lock_timeout) then exits 75 naming the holder, or runs after "
       "it; both never deploy at the same time; one certificate in NSS")
def test_two_enrolls_at_once(host: Host) -> None:
    prior = before(host)
    results: list[object] = [None, None]

    def go(i: int) -> None:
        results[i] = run(host, "enroll", "--force")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        survived(host, result, prior, exit_codes={0, 75}, error="lock",  # type: ignore[arg-type]
                 serial_may_change=True, dns_changed=True)
    converges(host, prior=prior)
