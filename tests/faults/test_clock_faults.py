"""The host's clock far ahead or behind: the real ``oeagent renew`` under libfaketime.

oeagent runs as a subprocess with libfaketime preloaded (``LD_PRELOAD`` + ``FAKETIME``), so
its own idea of "now" -- renewal decisions, expiry, and the TLS checks of the CA's HTTPS
certificate, which OpenSSL makes in-process -- is wrong. Two things keep the real clock:

- Pebble, the CA: it issues certificates valid from the real now, as a real CA would for a
  host whose clock is wrong;
- certutil and pk12util: oeagent starts every child with a minimal environment (PATH and
  the C locale), so they never inherit ``LD_PRELOAD``/``FAKETIME``. That is oeagent's design
  (``oeagent.proc``), kept on purpose and checked here; these tests therefore model "oeagent
  is wrong about the time", not a whole host with NSS wrong too.

Pebble is restarted to issue four-day certificates (renewal due after two days, at most
five hours earlier with jitter) so that a few days of offset reach every case while the
lab's own HTTPS certificate (30 days) is still valid; a year ahead is past that too.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from tests.faults.harness import (
    ENV,
    Host,
    Run,
    before,
    check_files,
    check_secrets,
    fault,
    new_host,
    nss_certs,
    nss_verifies,
    run,
    survived,
)

pytestmark = pytest.mark.lab

LIFETIME = 4 * 86400
_LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


@pytest.fixture(scope="module", autouse=True)
def four_day_certificates(lab: Lab) -> Iterator[None]:
    if not _LIBFAKETIME:
        pytest.skip("libfaketime not installed (make deb-deps)")
    original = lab.info.cert_validity_seconds
    lab.restart_pebble(cert_validity_seconds=LIFETIME)
    try:
        yield
    finally:
        # restart_pebble(None) would keep four days: back to exactly what the lab had.
        lab._restart_pebble(original)


@pytest.fixture
def host(lab: Lab, tmp_path: Path) -> Iterator[Host]:
    """An enrolled host that does not publish: with a wrong clock every TSIG-signed update
    is refused by BIND (BADTIME), which is not what these tests are about."""
    the_host = new_host(lab, tmp_path, publish=False)
    try:
        yield the_host
    finally:
        the_host.cleanup()


def faked(offset: str) -> dict[str, str]:
    # The monotonic clock moves by the same offset, which timeouts (differences) do not
    # notice. FAKETIME_DONT_FAKE_MONOTONIC=1 would be the obvious choice, but with it
    # libfaketime 0.9.10 breaks Python's time.sleep (clock_nanosleep with an absolute
    # monotonic deadline fails with EINVAL).
    return {**ENV, "LD_PRELOAD": _LIBFAKETIME[0], "FAKETIME": offset}


def run_at(host: Host, offset: str, *args: str) -> Run:
    """``run()`` with oeagent's clock moved by ``offset`` (libfaketime: +84h, +6d, -400d;
    one unit only, "+3d12h" is not understood)."""
    return run(host, *args, env=faked(offset))


def steps(result: Run) -> list[str]:
    return [str(step["step"]) for step in result.doc.get("steps", [])]


def test_libfaketime_moves_this_python_but_not_oeagents_children() -> None:
    """The premise of this file, checked rather than assumed."""
    probe = ("import time; from oeagent import proc; "
             "print(int(time.time()), proc.run(['date', '+%s']).stdout.strip())")
    probed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=False, env=faked("+400d"))
    assert probed.returncode == 0, probed.stderr
    out = probed.stdout.split()
    own, child = int(out[0]), int(out[1])
    assert abs(own - time.time() - 400 * 86400) < 600, "libfaketime does not move this Python"
    assert abs(child - time.time()) < 600, "a child of oeagent inherited the fake clock"


class NssWatch:
    """Samples NSS (certutil -L) and then the state's current serial, over and over. A
    sample without the working certificate whose state still points at it would mean the
    working certificate was removed before the new one had even been issued."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.samples: list[tuple[list[str], str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> NssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            in_nss = nss_certs(self.host)
            self.samples.append((in_nss, self.host.serial()))


@fault("clock far ahead, renewal due (libfaketime +84h on 4-day certificates)", "renew",
       "renews (the schedule says due) and deploys, exit 0; once the clock is right again "
       "renew has nothing to do")
def test_clock_ahead_renewal_due(host: Host) -> None:
    prior = before(host)
    result = run_at(host, "+84h", "renew")
    survived(host, result, prior, exit_codes={0}, serial_may_change=True)
    assert result.doc["issued"] and "expired" not in result.doc["reason"], json.dumps(result.doc)
    assert nss_certs(host) == [host.serial()] != [prior.serial]
    again = run(host, "renew")
    assert again.code == 0 and not again.doc["issued"], str(again)
    check_files(host)


@fault("clock far ahead, past the certificate's expiry (libfaketime +6 days)", "renew",
       "renews at once (hard reason: expired) and deploys, exit 0; NSS sampled during the run "
       "never lacks the working certificate before the new one is issued and stored; "
       "certutil, on the real clock, accepts the new one")
def test_clock_ahead_past_expiry(host: Host) -> None:
    prior = before(host)
    with NssWatch(host) as watch:
        result = run_at(host, "+6d", "renew")
    survived(host, result, prior, exit_codes={0}, serial_may_change=True)
    assert "expired" in result.doc["reason"], result.doc
    order = steps(result)
    assert order.index("store") < order.index("nss"), order
    assert result.doc["deploy"]["outcome"] == "replaced"
    assert nss_certs(host) == [host.serial()] != [prior.serial] and nss_verifies(host)
    early = [s for s in watch.samples if prior.serial not in s[0] and s[1] == prior.serial]
    assert not early, f"the working certificate left NSS before the new one was issued: {early}"
    assert len(watch.samples) > 5, "too few samples to say anything"
    again = run(host, "renew")
    assert again.code == 0 and not again.doc["issued"], str(again)


@fault("clock a year ahead (past the CA's own HTTPS certificate too)", "renew",
       "renewal is due but TLS to the CA fails (its certificate looks expired): exit 69 naming "
       "the CA and this host's clock as the likely cause; NSS and the working certificate "
       "untouched")
def test_clock_a_year_ahead(host: Host) -> None:
    prior = before(host)
    result = run_at(host, "+400d", "renew")
    survived(host, result, prior, exit_codes={69}, error="certificate has expired")
    assert "fix the clock" in result.error and "acme.ca_bundle" not in result.error
    assert "nss" not in steps(result), result.doc


@fault("clock a year behind (the certificate is not yet valid by the local clock)", "renew",
       "exit 1: the clock is behind, by how much, fix it (NTP); nothing was changed: no order, "
       "no NSS change, no failure or backoff recorded, the same on every run; renew with the "
       "right clock has nothing to do")
def test_clock_a_year_behind(host: Host) -> None:
    prior = before(host)
    renewal_json = host.state / "renewal.json"
    record = renewal_json.read_bytes() if renewal_json.exists() else None
    for _ in range(2):
        result = run_at(host, "-400d", "renew")
        survived(host, result, prior, exit_codes={1}, error="clock is behind")
        assert "fix the system clock" in result.error and "days later" in result.error
        assert "order" not in steps(result) and "nss" not in steps(result), result.doc
        assert (renewal_json.read_bytes() if renewal_json.exists() else None) == record
    check_secrets(host, [result.out, result.err])
    again = run(host, "renew")
    assert again.code == 0 and not again.doc["issued"], str(again)
    assert nss_certs(host) == [prior.serial]
