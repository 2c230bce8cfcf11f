"""BIND killed outright (SIGKILL: a crash, not a pause and not a closed port) while oeagent
publishes and while a dns-01 order has its TXT records in the zone. BIND is then started
again on the same files, as its supervisor would, and a later run must converge: oeagent's
records complete (no half-replaced rrset), no dns-01 TXT left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dns.rdatatype
import pytest

from lab import Lab
from tests.faults.harness import (
    Host,
    before,
    converges,
    fault,
    run_until,
    survived,
)
from tests.integration.publish_support import fresh_name

pytestmark = pytest.mark.lab


@contextlib.contextmanager
def named_comes_back(lab: Lab) -> Iterator[None]:
    """Whatever happens in the block, BIND runs again after it (the next test needs it)."""
    try:
        yield
    finally:
        if not lab.status().get("named"):
            lab.restart_named()


def challenge_txt(lab: Lab, *names: str) -> list[str]:
    """dns-01 TXT values BIND itself serves at the names' _acme-challenge owners."""
    found = []
    for name in names:
        reply = lab.dig(f"_acme-challenge.{name}", "TXT", tcp=True)
        found += [f"{rrset.name} {r}" for rrset in reply.answer
                  if rrset.rdtype == dns.rdatatype.TXT for r in rrset]
    return found


def whole_txt(records: dict[str, dict[str, int]]) -> None:
    """One _oe TXT value: a replaced rrset never shows both values, nor none."""
    assert len(records["txt"]) == 1, records["txt"]


@fault("BIND killed (SIGKILL) the moment publish has planned its update", "publish",
       "exit 69 naming the DNS server (connection reset, or closed without an answer), or "
       "exit 1 if the update went in first; the records are the old set or the new one, "
       "never half; BIND restarted on the same files, a rerun converges")
def test_bind_killed_as_publish_sends_its_update(host: Host, lab: Lab) -> None:
    prior = before(host)
    host.reconfigure({"publish.mode": "testing", "publish.verify_timeout": 2})
    with named_comes_back(lab):
        # The records were read; the update goes out next, racing the kill.
        result = run_until(host, "[plan]", lambda: lab.kill("named"), "publish")
        survived(host, result, prior, exit_codes={1, 69}, error="", dns_changed=True)
    # Reset before BIND read the update: not applied. Killed after reading it (the
    # connection closes without an answer: that was an internal error, EOFError): maybe
    # applied. Either way the records are the old set or the new one, whole.
    records = host.records()
    whole_txt(records)
    host.reconfigure({"publish.mode": "testing"})
    converges(host, "publish", prior=prior)
    assert records in (prior.records, host.records()), "a half-applied update"


@fault("BIND killed (SIGKILL) right after acknowledging publish's update", "publish",
       "the acknowledged update survives the crash whole (BIND's journal); verification "
       "fails while BIND is down, exit non-zero; after the restart a rerun has nothing to "
       "change and verifies")
def test_bind_killed_after_acknowledging_the_update(host: Host, lab: Lab) -> None:
    prior = before(host)
    host.reconfigure({"publish.mode": "testing", "publish.verify_timeout": 2})
    with named_comes_back(lab):
        result = run_until(host, "[apply]", lambda: lab.kill("named"), "publish")
        # Verification may just have finished before the kill landed: then exit 0.
        survived(host, result, prior, exit_codes={0, 1, 69}, dns_changed=True)
    after_crash = host.records()
    whole_txt(after_crash)
    assert after_crash != prior.records, "the acknowledged update was lost in the crash"
    host.reconfigure({"publish.mode": "testing"})
    again = converges(host, "publish", prior=prior)
    assert all(a["changes"] == 0 for a in again.doc["applied"]), again.doc["applied"]
    assert host.records() == after_crash


@fault("BIND killed (SIGKILL) while a dns-01 order's TXT records are in the zone",
       "enroll --force, renew --force (dns-01)",
       "exit 69 naming the DNS server; the working certificate stays; after BIND's restart "
       "the next run removes the TXT records the killed one left (recorded in the state "
       "directory) and converges", cases=2)
@pytest.mark.parametrize("command", ["enroll", "renew"])
def test_bind_killed_during_dns01(host: Host, lab: Lab, command: str) -> None:
    prior = before(host)
    # A name never validated before: Pebble sometimes reuses a valid authorization despite
    # PEBBLE_AUTHZREUSE=0, and then no TXT record would be needed at all.
    second = fresh_name(lab)
    names = [host.name, second]
    # A short propagation_timeout: the run waits that long for the dead server's answer.
    host.reconfigure({"challenge.type": "dns-01", "host.names": names,
                      "challenge.dns.propagation_timeout": 2})
    with named_comes_back(lab):
        result = run_until(host, "[challenge] published TXT", lambda: lab.kill("named"),
                           command, "--force")
    survived(host, result, prior, exit_codes={69},
             error=f"{lab.info.bind_address}:{lab.info.bind_port}")
    leftovers = challenge_txt(lab, *names)
    assert leftovers, "the killed run's TXT records did not survive BIND's crash"
    # The next run, whatever it is, removes exactly what the killed run added.
    converges(host, command, prior=prior)
    assert challenge_txt(lab, *names) == [], "dns-01 TXT records left behind"

