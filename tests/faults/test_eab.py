"""External Account Binding against the real Pebble with ``externalAccountBindingRequired``:
enrolling binds the account with the key id and HMAC key read from a file, and the HMAC
key (base64url, base64 or hex) never shows: not in stdout, stderr with --debug (logs and
tracebacks), the --json document, ``status --json``, nor any file in the state directory,
whether the binding succeeds or the CA refuses it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab.pebble import write_eab_key
from tests.faults.harness import (
    Host,
    Run,
    before,
    converges,
    eab_key_forms,
    fault,
    run,
    survived,
)

pytestmark = pytest.mark.lab

KID = "fault-lab-eab"


@pytest.fixture
def eab_key(lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """Pebble restarted to require EAB with a fresh key (it forgets every account, so the
    host must register again); the lab's defaults come back afterwards."""
    path = tmp_path / "eab.key"
    lab.restart_pebble_with(eab_keys={KID: write_eab_key(path)})
    try:
        yield path
    finally:
        lab.restart_pebble()


def assert_key_nowhere(host: Host, key_file: Path, *results: Run) -> None:
    raw = base64.urlsafe_b64decode(key_file.read_text().strip() + "==")
    forms = [base64.urlsafe_b64encode(raw).decode().rstrip("="),
             base64.b64encode(raw).decode().rstrip("="), raw.hex()]
    status = run(host, "status")
    for result in (*results, status):
        for form in forms:
            assert form not in result.out + result.err, f"the EAB key was printed: {result}"
    for path in host.state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert raw not in data and not any(f.encode() in data for f in forms), \
                f"the EAB key is in {path}"


@fault("the CA requires External Account Binding; oeagent binds with acme.eab_kid and the "
       "HMAC key file", "enroll --force",
       "exit 0, the account bound; the HMAC key in no output (--json, --debug logs), "
       "status or state file")
def test_eab_binding_keeps_the_key_secret(host: Host, lab: Lab, eab_key: Path) -> None:
    prior = before(host)
    host.reconfigure({"acme.eab_kid": KID, "acme.eab_hmac_key_file": str(eab_key)})
    assert eab_key_forms(host.config), "the harness does not know the EAB key"
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={0}, serial_may_change=True)
    assert "created an ACME account" in [s["message"] for s in result.doc["steps"]]
    assert_key_nowhere(host, eab_key, result)
    converges(host, prior=prior)


@fault("External Account Binding refused: wrong HMAC key, unknown key id, none configured",
       "enroll --force",
       "exit 69 naming the binding and the setting to fix (acme.eab_kid, the key's file); "
       "the key never printed, also in the traceback --debug shows; old certificate kept; "
       "rerun with the right key converges", cases=3)
@pytest.mark.parametrize("wrong", ["hmac key", "key id", "no binding"])
def test_eab_refused_is_clear_and_keeps_the_key_secret(host: Host, lab: Lab, eab_key: Path,
                                                       tmp_path: Path, wrong: str) -> None:
    prior = before(host)
    other = tmp_path / "other.key"
    write_eab_key(other)
    settings = {
        "hmac key": ({"acme.eab_kid": KID, "acme.eab_hmac_key_file": str(other)},
                     str(other), other),
        "key id": ({"acme.eab_kid": "nobody", "acme.eab_hmac_key_file": str(eab_key)},
                   "acme.eab_kid (nobody)", eab_key),
        "no binding": ({}, "requires External Account Binding", eab_key),
    }
    overrides, named, used = settings[wrong]
    host.reconfigure(overrides)
    result = run(host, "enroll", "--force")
    survived(host, result, prior, exit_codes={69}, error=named)
    assert "External Account Binding" in result.error, result.error
    assert "Traceback" in result.err  # --debug: the exception is shown, still without key
    assert_key_nowhere(host, used, result)
    assert_key_nowhere(host, eab_key, result)
    host.reconfigure({"acme.eab_kid": KID, "acme.eab_hmac_key_file": str(eab_key)})
    converges(host, "enroll", "--force", prior=prior)
