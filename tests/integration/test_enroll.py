"""oeagent enroll end to end, through the real CLI, against the real lab.

Pebble validates for real (http-01 connects back, dns-01 reads BIND), and the result is
checked with NSS's own tools, not with oeagent's NSS module.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from lab import Lab
from lab.procs import free_ports
from oeagent import config as config_module
from oeagent import keys

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def oeagent(config_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config_path), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def enroll_json(config_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = oeagent(config_path, "enroll", "--json", *args)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


class Nss:
    """Ask NSS's own tools what the database holds."""

    def __init__(self, config_path: Path) -> None:
        cfg = config_module.load(config_path)
        self.db = cfg.nss.database
        self.nickname = cfg.nss.nickname

    def certs(self) -> list[x509.Certificate]:
        proc = subprocess.run(["certutil", "-L", "-d", self.db, "-n", self.nickname, "-a"],
                              capture_output=True, check=False)
        return x509.load_pem_x509_certificates(proc.stdout) if proc.returncode == 0 else []

    def keys(self) -> list[str]:
        proc = subprocess.run(["certutil", "-K", "-d", self.db], capture_output=True, text=True,
                              input="", check=False)
        return [line for line in proc.stdout.splitlines() if line.startswith("<")]

    def listing(self) -> str:
        return subprocess.run(["certutil", "-L", "-d", self.db], capture_output=True, text=True,
                              check=False).stdout

    def snapshot(self) -> tuple[str, list[str], list[bytes]]:
        return (self.listing(), self.keys(), [c.fingerprint(c.signature_hash_algorithm) for c in self.certs()])  # type: ignore[arg-type]

    def verify(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["certutil", "-V", "-u", "V", "-d", self.db, "-n", self.nickname],
                              capture_output=True, text=True, check=False)


def state_key(config_path: Path) -> keys.PrivateKey:
    cfg = config_module.load(config_path)
    return keys.load_key_pem((cfg.state_dir / "keys" / "current.pem").read_bytes())


def test_enroll_http01_standalone_then_idempotent_then_force(lab_config_path: Path, lab: Lab) -> None:
    code, doc, err = enroll_json(lab_config_path)
    assert code == 0, err
    assert doc["ok"] is True and doc["issued"] is True
    assert doc["certificate"]["names"] == ["server.oe.test"]
    steps = [s["step"] for s in doc["steps"]]
    assert "nss" in steps and "verify" in steps and "pluto" in steps
    assert "recover" not in steps  # nothing was interrupted

    nss = Nss(lab_config_path)
    certs = nss.certs()
    assert len(certs) == 1
    assert format(certs[0].serial_number, "x") == doc["certificate"]["serial"]
    assert len(nss.keys()) == 1
    verify = nss.verify()
    assert verify.returncode == 0 and "certificate is valid" in verify.stdout
    # The certificate in NSS carries the key kept (0600) in the state directory.
    key = state_key(lab_config_path)
    assert keys.same_key(certs[0], key)
    cfg = config_module.load(lab_config_path)
    assert stat.S_IMODE((cfg.state_dir / "keys" / "current.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.state_dir.stat().st_mode) == 0o700
    # Pebble's root is the trust anchor pluto needs.
    assert "CT," in nss.listing()

    # Second run: nothing due, nothing issued, NSS untouched.
    before = nss.snapshot()
    code, doc2, err = enroll_json(lab_config_path)
    assert code == 0, err
    assert doc2["issued"] is False
    assert "nothing to do" in doc2["steps"][-1]["message"]
    assert nss.snapshot() == before

    # --force: a new certificate, same key (reuse), exactly one cert and one key remain.
    code, doc3, err = enroll_json(lab_config_path, "--force")
    assert code == 0, err
    assert doc3["issued"] is True
    assert doc3["certificate"]["serial"] != doc["certificate"]["serial"]
    certs = nss.certs()
    assert [format(c.serial_number, "x") for c in certs] == [doc3["certificate"]["serial"]]
    assert len(nss.keys()) == 1
    assert keys.same_key(certs[0], key)
    assert nss.verify().returncode == 0


def test_enroll_text_output_is_human_readable(lab_config_path: Path) -> None:
    proc = oeagent(lab_config_path, "enroll")
    assert proc.returncode == 0, proc.stderr
    assert "[nss]" in proc.stdout and "server.oe.test" in proc.stdout
    again = oeagent(lab_config_path, "enroll")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_enroll_http01_webroot(make_lab_config: Any, lab: Lab, tmp_path: Path) -> None:
    path = make_lab_config({"challenge.http.mode": "webroot", "host.names": ["www.oe.test"]})
    webroot = config_module.load(path).challenge.http.webroot
    assert webroot is not None
    with lab.serve_webroot(webroot) as server:
        code, doc, err = enroll_json(path)
    assert code == 0, err
    assert doc["certificate"]["names"] == ["www.oe.test"]
    assert any("/.well-known/acme-challenge/" in r for r in server.requests)
    # Tokens are removed afterwards.
    challenge_dir = webroot / ".well-known" / "acme-challenge"
    assert not challenge_dir.exists() or list(challenge_dir.iterdir()) == []
    assert Nss(path).verify().returncode == 0


def test_enroll_dns01_leaves_no_txt(make_lab_config: Any, lab: Lab) -> None:
    path = make_lab_config({"challenge.type": "dns-01", "host.names": ["alt.oe.test", "dns01.oe.test"]})
    code, doc, err = enroll_json(path)
    assert code == 0, err
    assert doc["certificate"]["names"] == ["alt.oe.test", "dns01.oe.test"]
    for name in ("_acme-challenge.alt.oe.test", "_acme-challenge.dns01.oe.test"):
        answer = lab.dig(name, "TXT")
        assert not [r for r in answer.answer if r.rdtype == 16], f"TXT left at {name}"
    assert Nss(path).verify().returncode == 0


def test_enroll_ip_identifier_over_http01(make_lab_config: Any) -> None:
    path = make_lab_config({"host.addresses": ["127.0.0.1"]})
    code, doc, err = enroll_json(path)
    assert code == 0, err
    assert doc["certificate"]["addresses"] == ["127.0.0.1"]
    assert Nss(path).certs()[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)


def test_failed_http01_is_clear_and_leaves_nss_as_it_was(make_lab_config: Any, lab: Lab) -> None:
    good = make_lab_config()
    code, _, err = enroll_json(good)
    assert code == 0, err
    nss = Nss(good)
    before = nss.snapshot()
    # Nobody answers http-01: the responder listens on a port Pebble never connects to. A
    # name never validated before, so Pebble cannot reuse an authorization (it sometimes
    # does despite PEBBLE_AUTHZREUSE=0).
    name = f"unanswered-{uuid.uuid4().hex[:8]}.oe.test"
    # A port free right now (the next port up was sometimes another lab's, and the run then
    # failed on "port in use" before reaching the CA).
    unused = next(p for p in free_ports(2) if p != lab.info.http_port)
    broken = make_lab_config({"challenge.http.port": unused, "host.names": [name]},
                             name="broken.toml")
    started = time.monotonic()
    code, doc, err = enroll_json(broken, "--force")
    assert code != 0
    assert doc["ok"] is False and name in doc["error"]
    assert "Traceback" not in err
    assert time.monotonic() - started < 60
    assert nss.snapshot() == before
    assert nss.verify().returncode == 0


def test_wrong_tsig_key_is_clear_and_leaves_nothing(make_lab_config: Any, lab: Lab, tmp_path: Path) -> None:
    good = make_lab_config({"challenge.type": "dns-01"})
    code, _, err = enroll_json(good)
    assert code == 0, err
    nss = Nss(good)
    before = nss.snapshot()
    wrong = tmp_path / "wrong.key"
    wrong.write_text("c29tZXRoaW5nLWVsc2UtZW50aXJlbHktMTIzNDU2Nzg=\n")
    wrong.chmod(0o600)
    # A name never validated before: Pebble sometimes reuses a valid authorization despite
    # PEBBLE_AUTHZREUSE=0, and then no TXT (and no TSIG) would be needed at all.
    name = f"tsig-{uuid.uuid4().hex[:8]}.oe.test"
    bad = make_lab_config({"challenge.type": "dns-01", "challenge.dns.tsig_secret_file": str(wrong),
                           "host.names": [name]},
                          name="bad.toml")
    code, doc, err = enroll_json(bad, "--force")
    assert code != 0
    assert "TSIG" in doc["error"] or "tsig" in doc["error"].lower()
    assert "c29tZXRoaW5n" not in doc["error"] + err
    answer = lab.dig(f"_acme-challenge.{name}", "TXT")
    assert not [r for r in answer.answer if r.rdtype == 16]
    assert nss.snapshot() == before


def test_concurrent_enrolls_do_not_interleave(lab_config_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "oeagent", "--config", str(lab_config_path), "enroll", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    # Exactly one run issued; the other waited for the lock and found nothing to do.
    assert sorted(r["issued"] for r in results) == [False, True]
    nss = Nss(lab_config_path)
    assert len(nss.certs()) == 1 and len(nss.keys()) == 1


def test_lock_held_fails_clearly(make_lab_config: Any) -> None:
    path = make_lab_config({"lock_timeout": 0.2})
    from oeagent.state import StateDir

    state = StateDir(config_module.load(path).state_dir)
    with state.lock(timeout=1):
        code, doc, _ = enroll_json(path)
    assert code == 75
    assert "holds the lock" in doc["error"] and f"pid {os.getpid()}" in doc["error"]


def test_rerun_repairs_a_database_that_lost_its_anchor(lab_config_path: Path) -> None:
    code, first, err = enroll_json(lab_config_path)
    assert code == 0, err
    nss = Nss(lab_config_path)
    anchors = [line.rsplit(None, 1)[0].strip() for line in nss.listing().splitlines() if "CT," in line]
    assert len(anchors) == 1
    subprocess.run(["certutil", "-D", "-d", nss.db, "-n", anchors[0]], check=True)
    assert nss.verify().returncode != 0
    code, doc, err = enroll_json(lab_config_path)
    assert code == 0, err
    assert doc["issued"] is False  # the certificate is fine; only the deployment is repaired
    assert nss.verify().returncode == 0
    assert [format(c.serial_number, "x") for c in nss.certs()] == [first["certificate"]["serial"]]
