"""enroll under faults: the CA unreachable or untrusted, and SIGKILL at each step.

After every fault the run ends with one clear line and a non-zero exit, NSS is as it was,
and a plain rerun converges to one verified certificate under the nickname.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import Lab
from tests.integration.publish_support import fresh_name
from tests.integration.test_enroll import Nss, enroll_json

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def test_ca_down_is_a_clear_error(make_lab_config: Any) -> None:
    path = make_lab_config({"acme.directory": "https://127.0.0.1:9/dir"})
    code, doc, err = enroll_json(path)
    assert code == 69
    assert "unreachable" in doc["error"] and "127.0.0.1:9" in doc["error"]
    assert "Traceback" not in err


def test_untrusted_ca_certificate_is_refused_not_ignored(make_lab_config: Any, lab: Lab) -> None:
    # Trust Pebble's issuing root instead of the CA of Pebble's own HTTPS listener.
    path = make_lab_config({"acme.ca_bundle": str(lab.info.pebble_root_pem)})
    code, doc, _ = enroll_json(path)
    assert code == 69
    assert "not trusted" in doc["error"] and "ca_bundle" in doc["error"]


def kill_at(config_path: Path, marker: str) -> str:
    """Run enroll and SIGKILL it as soon as it reports ``marker``; return what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "oeagent", "--config", str(config_path), "enroll", "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    seen = []
    with proc:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(marker):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


@pytest.mark.parametrize("marker", ["[key]", "[order]", "[challenge]", "[finalized]", "[store]",
                                    "[nss] certificate"])
def test_sigkill_at_each_step_then_rerun_converges(make_lab_config: Any, lab: Lab,
                                                  marker: str) -> None:
    config = make_lab_config()
    code, _, err = enroll_json(config)
    assert code == 0, err
    nss = Nss(config)
    # The killed run asks for a name never validated before: Pebble sometimes reuses the
    # first run's valid authorization despite PEBBLE_AUTHZREUSE=0, and then no [challenge]
    # step is reached to kill at.
    make_lab_config({"host.names": [fresh_name(lab)]})
    kill_at(config, marker)
    # Whatever was killed, the nickname holds exactly one certificate with its key...
    assert len(nss.certs()) == 1 and len(nss.keys()) == 1
    # ...and a plain rerun converges: deployed, verified, matching the state directory.
    code, _, err = enroll_json(config)
    assert code == 0, err
    current = json.loads((config.parent / "state" / "current.json").read_text())
    assert [format(c.serial_number, "x") for c in nss.certs()] == [current["serial"]]
    assert nss.verify().returncode == 0
    assert len(nss.keys()) == 1
    # No temp files are taken for real files: every real file parses.
    state = config.parent / "state"
    for path in state.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
