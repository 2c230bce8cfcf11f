"""oeagent renew / status / install-units through the real CLI, and key rollover, in the lab."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oeagent import config as config_module
from oeagent import keyroll, keys
from oeagent.renew import renew
from oeagent.report import NullReporter
from oeagent.state import StateDir

from .conftest import ShortConfig, oeagent
from .test_agent import nss_serial, state_serial

pytestmark = pytest.mark.lab

HOOK = """#!{python}
import json, os, sys
with open({out!r}, "a") as f:
    f.write(json.dumps({{k: v for k, v in os.environ.items()}}) + "\\n")
"""


def test_renew_nothing_due_force_and_a_failing_hook(short_config: ShortConfig,
                                                   tmp_path: Path) -> None:
    plain = short_config()
    assert oeagent(plain, "enroll").returncode == 0
    old = state_serial(plain)

    done = oeagent(plain, "renew", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["ok"] and doc["issued"] is False
    assert doc["schedule"] == "fallback" and doc["next_check"]
    dry = oeagent(plain, "renew", "--dry-run", "--force")
    assert dry.returncode == 0 and "would renew" in dry.stdout

    hook = tmp_path / "hook.py"
    out = tmp_path / "hook-env.jsonl"
    hook.write_text(HOOK.format(python=sys.executable, out=str(out)))
    hook.chmod(0o755)
    with_hooks = short_config({"hooks.post_deploy": [[str(hook)], ["/bin/false"]]},
                              name="hooks.toml")
    done = oeagent(with_hooks, "renew", "--force", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr
    assert doc["ok"] is False and "post-deploy hook" in doc["error"] and "/bin/false" in doc["error"]
    assert [h["ok"] for h in doc["hooks"]] == [True, False]
    new = doc["certificate"]["serial"]
    # The failing hook did not undo the good certificate.
    assert new != old and nss_serial(plain) == new == state_serial(plain)
    env = json.loads(out.read_text().splitlines()[-1])
    assert env["OEAGENT_EVENT"] == "renew" and env["OEAGENT_CERT_SERIAL"] == new
    assert env["OEAGENT_PREVIOUS_SERIAL"] == old
    assert env["OEAGENT_CERT_NAMES"] == "server.oe.test"
    assert Path(env["OEAGENT_FULLCHAIN_PATH"]).is_file()
    assert set(env) <= {*(k for k in env if k.startswith("OEAGENT_")), "PATH", "LC_ALL", "LANG"}
    # A hook failure is not a renewal failure: no backoff recorded.
    record = json.loads((config_module.load(plain).state_dir / "renewal.json").read_text())
    assert record["failures"] == 0 and record["last_success"]["serial"] == new


def test_status_text_json_and_exit_codes(short_config: ShortConfig) -> None:
    config = short_config()
    done = oeagent(config, "status")
    assert done.returncode == 1 and "no certificate enrolled" in done.stdout
    assert oeagent(config, "enroll").returncode == 0
    done = oeagent(config, "status", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 0, doc
    assert doc["certificate"]["serial"] == state_serial(config)
    assert "Pebble" in doc["certificate"]["issuer"]
    assert doc["nss"]["exact"] and doc["nss"]["verified"]
    assert doc["renewal"]["next_time"] and doc["renewal"]["why"]
    assert doc["pluto"]["reachable"] is False
    text = oeagent(config, "status").stdout
    assert "healthy" in text and "exactly this certificate" in text
    # NSS no longer holds the certificate: needs attention.
    cfg = config_module.load(config)
    subprocess.run(["certutil", "-D", "-d", cfg.nss.database, "-n", "oeagent"], check=True)
    done = oeagent(config, "status", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 1 and any("NSS holds 0" in a for a in doc["attention"])


def test_installed_units_pass_systemd_analyze_verify(short_config: ShortConfig,
                                                     tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd; `make deps`)")
    config = short_config()
    units = tmp_path / "units"
    done = subprocess.run([str(Path(sys.executable).with_name("oeagent")), "--config",
                           str(config), "install-units", "--directory", str(units)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    service = (units / "oeagent.service").read_text()
    cfg = config_module.load(config)
    assert f"ReadWritePaths={cfg.state_dir} {cfg.nss.directory} {cfg.pluto.ipsec_dir}" in service
    assert "StateDirectory" not in service  # a state_dir outside /var/lib is the admin's
    assert f"LoadCredential={cfg.challenge.dns.tsig_secret.source.name}:" in service  # type: ignore[union-attr]
    names = sorted(p.name for p in units.iterdir())
    assert names == ["oeagent-renew.service", "oeagent-renew.timer", "oeagent.service"]
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=units,
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    # Unknown keys are only warnings; any output at all counts as a failure here.
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr
    # The shipped templates differ only in paths (and verify except for the missing binary).
    shipped = (Path(__file__).resolve().parents[2] / "systemd" / "oeagent.service").read_text()
    assert "Type=notify" in shipped and "WatchdogSec=" in shipped


def test_key_rollover_next_key_announced_then_switched_at_a_renewal(
        short_config: ShortConfig) -> None:
    config = short_config({"rollover.key_lifetime": 4, "rollover.announce": 2})
    cfg = config_module.load(config)
    state = StateDir(cfg.state_dir)
    t0 = dt.datetime.now(dt.UTC)
    renew(cfg, NullReporter(), now=t0)  # enrolls; starts the key's lifetime clock
    first_key = keys.spki_sha256(keys.load_key_pem(state.cert_key_path.read_bytes()))
    assert keyroll.current_and_next_keys(state, t0)[1] is None
    # 2 s later (lifetime 4 - announce 2): the next key is generated and announced...
    renew(cfg, NullReporter(), force=True, now=t0 + dt.timedelta(seconds=2.5))
    current, upcoming = keyroll.current_and_next_keys(state)
    assert current is not None and upcoming is not None
    assert current.spki_sha256 == first_key != upcoming.spki_sha256
    # ...but not used yet: that renewal kept the current key.
    assert keys.spki_sha256(keys.load_key_pem(state.cert_key_path.read_bytes())) == first_key
    # Once announced for 2 s, the next renewal switches to it.
    result = renew(cfg, NullReporter(), force=True, now=t0 + dt.timedelta(seconds=5))
    assert result.issued
    current, after = keyroll.current_and_next_keys(state)
    assert after is None and current is not None
    assert current.spki_sha256 == upcoming.spki_sha256
    cert = state.cert_dir(state_serial(config)) / "cert.pem"
    from cryptography import x509

    assert keys.spki_sha256(x509.load_pem_x509_certificate(cert.read_bytes())) == \
        upcoming.spki_sha256
    assert nss_serial(config) == state_serial(config)
