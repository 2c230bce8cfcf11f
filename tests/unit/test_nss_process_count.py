"""How many certutil/pk12util runs a deployment costs, against the real NSS tools.

Each run is a process of ~10 ms (pk12util -i ~30-45 ms), and the enrollment benchmark
(bench/enroll.py) found a renewal's deployment making 25 of them: the same listing read four
times, the nickname's certificates five times, the keys three times, ``certutil -V`` twice
after the swap. These pin the counts (the database read once for the anchors and the swap,
one ``-V`` after it), so the redundancy cannot creep back; what each run checks is in ``oeagent.nss.swap``.
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oeagent import proc
from oeagent.certstore import StoredCertificate
from oeagent.config import Config, HostConfig, NssConfig, PlutoConfig
from oeagent.deploy import deploy_to_nss
from oeagent.nss import NssDatabase, fingerprint
from oeagent.report import Reporter
from oeagent.state import StateDir

NICK = "oeagent"
NOW = dt.datetime.now(dt.UTC)

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "certutil", "pk12util"], capture_output=True).returncode != 0,
    reason="needs libnss3-tools",
)


def _cert(
    cn: str, issuer: str, public: Any, signer: ec.EllipticCurvePrivateKey, *, ca: bool,
    age_hours: int = 1,
) -> x509.Certificate:
    def name(value: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])

    start = NOW - dt.timedelta(hours=age_hours)
    builder = (
        x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(issuer))
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


class Calls:
    """Every process oeagent starts, by tool, verb and database (``live`` or ``trial``)."""

    def __init__(self, live: str) -> None:
        self.live = live
        self.counts: Counter[str] = Counter()
        self._real = proc.run
        self._lock = threading.Lock()  # some questions are asked at once, from threads

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        database = args[args.index("-d") + 1] if "-d" in args else ""
        where = "live" if database == self.live else "trial"
        verb = args[1] + (" -n" if args[1] == "-L" and "-n" in args else "")
        with self._lock:
            self.counts[f"{where} {args[0]} {verb}"] += 1
        return self._real(argv, **kwargs)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[x509.Certificate], Calls, Any]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Count Root", "Count Root", root_key.public_key(), root_key, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Count R1", "Count Root", inter_key.public_key(), root_key, ca=True)
    anchors = tmp_path / "root.pem"
    anchors.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    config = Config(
        host=HostConfig(("host.example.org",)),
        state_dir=tmp_path / "state",
        nss=NssConfig(database=f"sql:{tmp_path / 'nss'}", trust_anchors=str(anchors)),
        pluto=PlutoConfig(tmp_path / "no-pluto.ctl", tmp_path, tmp_path / "ipsec.conf"),
    )
    calls = Calls(config.nss.database)
    monkeypatch.setattr(proc, "run", calls.run)
    deployed: list[x509.Certificate] = []

    def deploy(key: ec.EllipticCurvePrivateKey, age_hours: int = 1,
               leaf: x509.Certificate | None = None) -> str:
        leaf = leaf or _cert("host.example.org", "Count R1", key.public_key(), inter_key,
                             ca=False, age_hours=age_hours)
        stored = StoredCertificate(leaf, (inter,))
        deployed.append(leaf)
        calls.counts.clear()
        result = deploy_to_nss(config, StateDir(config.state_dir), stored, key,
                               Reporter(stream=io.StringIO()))
        counted = calls.counts.copy()  # not the check below
        assert NssDatabase(config.nss.database).fingerprints(NICK) == [fingerprint(leaf)]
        calls.counts = counted
        return result.outcome

    return deployed, calls, deploy


def test_first_deployment(setup: tuple[list[x509.Certificate], Calls, Any]) -> None:
    _, calls, deploy = setup
    assert deploy(ec.generate_private_key(ec.SECP256R1())) == "installed"
    # A new database: create it, list it (empty), add the anchor, list it again (the anchor
    # changed it); nothing under the nickname, so no key listing and no trial run.
    assert calls.counts == Counter({
        "live certutil -N": 1, "live certutil -L": 2, "live certutil -A": 1,
        "live certutil -L -n": 1 + 1,  # the anchor's certificates; the check after the import
        "live pk12util -i": 1, "live certutil -K": 1, "live certutil -V": 1,
    })


def test_renewal_with_the_same_key(setup: tuple[list[x509.Certificate], Calls, Any]) -> None:
    _, calls, deploy = setup
    key = ec.generate_private_key(ec.SECP256R1())
    deploy(key, age_hours=2)
    assert deploy(key) == "replaced"
    assert calls.counts == Counter({
        # Read once: one listing, each of the three nicknames' certificates (root,
        # intermediate, oeagent), one key listing; the anchor is there already.
        "live certutil -L": 1, "live certutil -K": 1 + 1,  # + the check after the import
        # The three nicknames; the purge's look after -F (what it deletes is what was read
        # and backed up); the check after the import.
        "live certutil -L -n": 3 + 1 + 1,
        "live certutil -F": 1, "live pk12util -i": 1,
        "live certutil -V": 1,  # the swap's check after the import, not run again
        # The rehearsal on a copy: purge (what is there is known), import, check.
        "trial certutil -F": 1, "trial certutil -L -n": 2, "trial pk12util -i": 1,
        "trial certutil -K": 1, "trial certutil -V": 1,
    })
    assert sum(calls.counts.values()) == 17  # 25 before the database was read once


def test_unchanged_redeployment(setup: tuple[list[x509.Certificate], Calls, Any]) -> None:
    deployed, calls, deploy = setup
    key = ec.generate_private_key(ec.SECP256R1())
    deploy(key)
    assert deploy(key, leaf=deployed[0]) == "unchanged"
    # Read once, the key listing, one certutil -V (the swap's, not repeated by deploy).
    assert calls.counts == Counter({"live certutil -L": 1, "live certutil -L -n": 3,
                                    "live certutil -K": 1, "live certutil -V": 1})


def test_contents_answer_without_certutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Count Root", "Count Root", root_key.public_key(), root_key, ca=True)
    other = _cert("Other Root", "Other Root", root_key.public_key(), root_key, ca=True)
    db = NssDatabase(f"sql:{tmp_path / 'nss'}")
    db.ensure_exists()
    db.add_certificate(root, "plain", ",,")
    contents = db.contents()
    assert contents.nicknames() == ["plain"]
    assert contents.nickname_of(root) == "plain"
    assert contents.nickname_of(other) is None
    assert contents.trust("plain") == [",,"]
    calls = Calls(db.database)
    monkeypatch.setattr(proc, "run", calls.run)
    # Present but untrusted: only the certutil -A that sets its trust runs.
    assert db.add_trust_anchor(root, contents=contents) is True
    assert calls.counts == Counter({"live certutil -A": 1, "live certutil -L": 1})
    assert db.trust("plain") == ["CT,,"]
    calls.counts.clear()
    assert db.add_trust_anchor(root, contents=db.contents()) is False
    assert calls.counts == Counter({"live certutil -L": 1, "live certutil -L -n": 1})


def test_purge_with_known_certificates_still_empties_the_nickname(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = _cert("a.example.org", "a.example.org", key.public_key(), key, ca=False)
    second = _cert("a.example.org", "a.example.org", key.public_key(), key, ca=False,
                   age_hours=2)
    db = NssDatabase(f"sql:{tmp_path / 'nss'}")
    db.ensure_exists()
    db.add_certificate(first, NICK, ",,")
    db.add_certificate(second, NICK, ",,")
    assert len(db.certificates(NICK)) == 2
    # The caller knew of one (another process added the second since): both go.
    assert db.purge(NICK, known=[first]) == 2
    assert db.certificates(NICK) == []
