"""oeagent.nss against the real certutil/pk12util (no mocks): anchors, install, swap, rollback."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oeagent import fsio
from oeagent.errors import NssError
from oeagent.nss import NssDatabase, fingerprint, key_id, parse_password_file, swap
from oeagent.nss.database import CertEntry, KeyEntry

NICK = "oeagent"
NOW = dt.datetime.now(dt.UTC)

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "certutil", "pk12util"], capture_output=True).returncode != 0,
    reason="needs libnss3-tools",
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    san: str | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(hours=1),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    builder = builder.add_extension(usage, critical=True)
    if san:
        # An empty subject requires a critical SAN (RFC 5280), as in Let's Encrypt's profiles.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=not subject.rdns
        )
    return builder.sign(signer, hashes.SHA256())


@dataclass
class Pki:
    root: x509.Certificate
    inter: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey

    def leaf(
        self,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        *,
        subject: x509.Name | None = None,
        age_hours: int = 1,
    ) -> x509.Certificate:
        return _cert(
            subject if subject is not None else x509.Name([]),
            self.inter.subject,
            key.public_key(),
            self.inter_key,
            ca=False,
            san="host.example.org",
            not_before=NOW - dt.timedelta(hours=age_hours),
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert(
        _name("oeagent Test Root"),
        _name("oeagent Test Root"),
        root_key.public_key(),
        root_key,
        ca=True,
    )
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert(_name("oeagent Test R1"), root.subject, inter_key.public_key(), root_key, ca=True)
    return Pki(root, inter, inter_key)


@pytest.fixture
def db(tmp_path: Path) -> NssDatabase:
    database = NssDatabase(f"sql:{tmp_path / 'nss'}")
    assert database.ensure_exists() is True
    return database


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def anchored(db: NssDatabase, pki: Pki) -> NssDatabase:
    assert db.add_trust_anchor(pki.root) is True
    return db


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Snapshot:
    listing: list[CertEntry]
    fingerprints: dict[str, list[str]]
    keys: list[KeyEntry]


def snapshot(db: NssDatabase) -> Snapshot:
    return Snapshot(
        sorted(db.list_certificates(), key=repr),
        {n: sorted(fingerprint(c) for c in cs) for n, cs in db.contents().certificates.items()},
        sorted(db.keys(), key=repr),
    )


def assert_single_identity(db: NssDatabase, cert: x509.Certificate) -> None:
    assert db.fingerprints(NICK) == [fingerprint(cert)]
    assert [k.key_id for k in db.keys()] == [key_id(cert)]
    assert db.orphan_keys() == []
    db.verify(NICK)


# -- creation and passwords -----------------------------------------------------------------


def test_ensure_exists_creates_private_directory_once(tmp_path: Path) -> None:
    database = NssDatabase(f"sql:{tmp_path / 'a' / 'nss'}")
    assert database.ensure_exists() is True
    assert (tmp_path / "a" / "nss").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "nss" / "cert9.db").exists()
    assert database.ensure_exists() is False
    assert database.list_certificates() == []
    assert database.keys() == []


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_ensure_exists_where_a_file_is_in_the_way(tmp_path: Path, where: str) -> None:
    # nss.database naming a file (or a path through one) raised FileExistsError or
    # NotADirectoryError out of enroll: exit 70 instead of one NssError naming it.
    (tmp_path / "file").write_text("not a directory\n")
    database = NssDatabase(f"sql:{tmp_path / where}")
    with pytest.raises(NssError, match="cannot create the NSS database directory"):
        database.ensure_exists()


def test_password_file_formats() -> None:
    assert parse_password_file("NSS Certificate DB:s3:cret\n") == "s3:cret"
    assert parse_password_file("other token:x\nNSS Certificate DB:pw\n") == "pw"
    assert parse_password_file("bare:password\n") == "bare:password"
    with pytest.raises(NssError, match="no line for the internal token"):
        parse_password_file("a:b\nc:d\n")


def test_password_protected_database(tmp_path: Path, pki: Pki, work: Path) -> None:
    pwfile = tmp_path / "nsspassword"
    pwfile.write_text("NSS Certificate DB:s3:cret\n")
    pwfile.chmod(0o600)
    db = NssDatabase(f"sql:{tmp_path / 'nss'}", pwfile)
    assert db.ensure_exists() is True
    # The database really has that (bare) password: certutil with a wrong one fails.
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    bad = subprocess.run(
        ["certutil", "-K", "-d", db.database, "-f", str(wrong)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode != 0
    assert db.add_trust_anchor(pki.root) is True
    key = ec_key()
    leaf = pki.leaf(key)
    assert db.install_identity(NICK, key, leaf, [pki.inter], work_dir=work).status == "installed"
    key2 = ec_key()
    leaf2 = pki.leaf(key2, age_hours=0)
    assert db.install_identity(NICK, key2, leaf2, [pki.inter], work_dir=work).status == "replaced"
    assert_single_identity(db, leaf2)
    # A database with a password but none configured fails at once instead of prompting.
    with pytest.raises(NssError, match=r"BAD_PASSWORD|password"):
        NssDatabase(db.database).keys()


# -- trust anchors ----------------------------------------------------------------------------


def test_trust_anchor_idempotent_by_fingerprint(db: NssDatabase, pki: Pki) -> None:
    assert db.add_trust_anchor(pki.root) is True
    assert db.add_trust_anchor(pki.root) is False
    assert db.add_trust_anchor(pki.root, "another name") is False  # same cert, other name
    assert db.list_certificates() == [CertEntry("oeagent Test Root", "CT,,")]


def test_trust_anchor_upgrades_untrusted_copy(db: NssDatabase, pki: Pki) -> None:
    db.add_certificate(pki.root, "plain", ",,")
    assert db.add_trust_anchor(pki.root) is True
    assert db.list_certificates() == [CertEntry("plain", "CT,,")]


def test_trust_anchor_refuses_leaf(db: NssDatabase, pki: Pki) -> None:
    with pytest.raises(NssError, match="not a CA certificate"):
        db.add_trust_anchor(pki.leaf(ec_key()))
    with pytest.raises(NssError, match="non-CA"):
        db.add_trust_anchors([pki.root, pki.leaf(ec_key())])
    assert db.list_certificates() == []


def test_trust_anchor_bundle(db: NssDatabase, tmp_path: Path) -> None:
    bundle = Path(__file__).parents[2] / "oeagent" / "data" / "letsencrypt-roots.pem"
    if not bundle.exists():
        pytest.skip("no shipped Let's Encrypt roots")
    count = db.add_trust_anchor_bundle(bundle)
    assert count >= 1
    assert db.add_trust_anchor_bundle(bundle) == 0
    assert all(e.trust == "CT,," for e in db.list_certificates())


# -- install and replace ----------------------------------------------------------------------


def test_install_then_unchanged(anchored: NssDatabase, pki: Pki, work: Path) -> None:
    key = ec_key()
    leaf = pki.leaf(key)
    result = anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)
    assert (result.status, result.fingerprint) == ("installed", fingerprint(leaf))
    assert_single_identity(anchored, leaf)
    before = snapshot(anchored)
    again = anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)
    assert again.status == "unchanged"
    assert snapshot(anchored) == before
    assert sorted(os.listdir(work)) == []  # no journal, backup or password left behind


def test_result_says_whether_certutil_verified(anchored: NssDatabase, pki: Pki, work: Path) -> None:
    # deploy runs certutil -V itself only when the swap did not (verify=False).
    key = ec_key()
    leaf = pki.leaf(key)
    assert anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work).verified
    again = anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work, verify=False)
    assert (again.status, again.verified) == ("unchanged", False)
    renewed = pki.leaf(key, age_hours=0)
    result = anchored.install_identity(NICK, key, renewed, [pki.inter], work_dir=work)
    assert (result.status, result.verified) == ("replaced", True)


@pytest.mark.parametrize("same_key", [True, False], ids=["same-key", "new-key"])
def test_replace_with_renewed(anchored: NssDatabase, pki: Pki, work: Path, same_key: bool) -> None:
    key = ec_key()
    old = pki.leaf(key, age_hours=2)
    anchored.install_identity(NICK, key, old, [pki.inter], work_dir=work)
    new_key = key if same_key else ec_key()
    new = pki.leaf(new_key, age_hours=1)
    result = anchored.install_identity(NICK, new_key, new, [pki.inter], work_dir=work)
    assert result.status == "replaced"
    assert result.swap_window is not None and 0 < result.swap_window < 2.0
    assert_single_identity(anchored, new)
    # The intermediate came in through the p12 once, without trust, and was not duplicated.
    assert [e for e in anchored.list_certificates() if e.nickname != NICK] == [
        CertEntry("oeagent Test Root", "CT,,"),
        CertEntry("oeagent Test R1", ",,"),
    ]
    assert os.listdir(work) == []


def test_replace_with_older_certificate_and_rsa(
    anchored: NssDatabase, pki: Pki, work: Path
) -> None:
    # Going back to an OLDER certificate is where "newest wins" bites hardest.
    key = ec_key()
    newer = pki.leaf(key, age_hours=1)
    anchored.install_identity(NICK, key, newer, [pki.inter], work_dir=work)
    rsa_key = rsa.generate_private_key(65537, 2048)
    older = pki.leaf(rsa_key, age_hours=5, subject=_name("host.example.org"))
    # A different subject: NSS would otherwise keep both; purge must still take everything.
    result = anchored.install_identity(NICK, rsa_key, older, [pki.inter], work_dir=work)
    assert result.status == "replaced"
    assert_single_identity(anchored, older)


def test_cleans_up_duplicates_left_by_plain_imports(
    anchored: NssDatabase, pki: Pki, work: Path, tmp_path: Path
) -> None:
    # The trap as a plain pk12util user meets it: two certificates (and keys) under NICK.
    key1, key2 = ec_key(), ec_key()
    leaf1, leaf2 = pki.leaf(key1, age_hours=3), pki.leaf(key2, age_hours=2)
    for key, leaf in ((key1, leaf1), (key2, leaf2)):
        p12 = swap.pkcs12_bytes(NICK, key, leaf, [pki.inter], b"pw")
        (tmp_path / "x.p12").write_bytes(p12)
        (tmp_path / "pw").write_bytes(b"pw")
        anchored.import_pkcs12(tmp_path / "x.p12", tmp_path / "pw", "plain import")
    assert len(anchored.certificates(NICK)) == 2
    key3 = ec_key()
    leaf3 = pki.leaf(key3)
    assert anchored.install_identity(NICK, key3, leaf3, [pki.inter], work_dir=work).status == (
        "replaced"
    )
    assert_single_identity(anchored, leaf3)


def test_purge_handles_certificate_without_key(anchored: NssDatabase, pki: Pki, work: Path) -> None:
    # certutil -F -n exits 0 but deletes nothing when the certificate has no key.
    keyless = pki.leaf(ec_key(), age_hours=3)
    anchored.add_certificate(keyless, NICK, ",,")
    key = ec_key()
    leaf = pki.leaf(key)
    assert anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work).status == (
        "replaced"
    )
    assert_single_identity(anchored, leaf)


def test_repairs_missing_intermediate(anchored: NssDatabase, pki: Pki, work: Path) -> None:
    key = ec_key()
    leaf = pki.leaf(key)
    anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)
    anchored.run("certutil", ["-D", "-n", "oeagent Test R1"], "test")
    result = anchored.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)
    assert result.status == "repaired"
    assert_single_identity(anchored, leaf)


# -- refusals and rollback --------------------------------------------------------------------


@pytest.fixture
def installed(anchored: NssDatabase, pki: Pki, work: Path) -> tuple[NssDatabase, Snapshot]:
    key = ec_key()
    anchored.install_identity(NICK, key, pki.leaf(key, age_hours=2), [pki.inter], work_dir=work)
    return anchored, snapshot(anchored)


def test_refuses_key_that_does_not_match(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path
) -> None:
    db, before = installed
    with pytest.raises(NssError, match="does not belong"):
        db.install_identity(NICK, ec_key(), pki.leaf(ec_key()), [pki.inter], work_dir=work)
    assert snapshot(db) == before


def test_refuses_subject_filed_under_other_nickname(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path
) -> None:
    # Two empty-subject certificates share one nickname in NSS, whatever their friendlyName.
    db, before = installed
    key = ec_key()
    with pytest.raises(NssError, match="same subject"):
        db.install_identity("other", key, pki.leaf(key), [pki.inter], work_dir=work)
    assert snapshot(db) == before


def test_trial_catches_unverifiable_chain(
    installed: tuple[NssDatabase, Snapshot], work: Path
) -> None:
    db, before = installed
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    other = Pki(
        _cert(
            _name("Untrusted Root"),
            _name("Untrusted Root"),
            other_root_key.public_key(),
            other_root_key,
            ca=True,
        ),
        _cert(
            _name("Untrusted R1"),
            _name("Untrusted Root"),
            other_root_key.public_key(),
            other_root_key,
            ca=True,
        ),
        other_root_key,
    )
    key = ec_key()
    with pytest.raises(NssError, match=r"trial install.*nothing was changed"):
        db.install_identity(NICK, key, other.leaf(key), [other.inter], work_dir=work)
    assert snapshot(db) == before
    assert os.listdir(work) == []


@pytest.fixture
def no_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the rehearsal so a failure reaches the real database and its rollback."""
    monkeypatch.setattr(swap, "rehearse", lambda *args, **kwargs: None)


@pytest.mark.usefixtures("no_trial")
def test_rollback_when_pk12util_rejects(
    installed: tuple[NssDatabase, Snapshot],
    pki: Pki,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, before = installed
    monkeypatch.setattr(swap, "pkcs12_bytes", lambda *args: b"not a pkcs12 file")
    key = ec_key()
    with pytest.raises(NssError, match=r"importing the new certificate.*previous certificate was"):
        db.install_identity(NICK, key, pki.leaf(key), [pki.inter], work_dir=work)
    assert snapshot(db) == before
    assert os.listdir(work) == []


@pytest.mark.usefixtures("no_trial")
def test_rollback_when_verification_fails(
    installed: tuple[NssDatabase, Snapshot], work: Path
) -> None:
    db, before = installed
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(_name("Other Root"), _name("Other Root"), root_key.public_key(), root_key, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    other = Pki(
        root,
        _cert(_name("Other R1"), root.subject, inter_key.public_key(), root_key, ca=True),
        inter_key,
    )
    key = ec_key()
    with pytest.raises(NssError, match=r"verifying.*previous certificate was restored"):
        db.install_identity(NICK, key, other.leaf(key), [other.inter], work_dir=work)
    # "Other R1" came in with the failed p12 and went out with the rollback.
    assert snapshot(db) == before


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[None]:
    yield
    subprocess.run(["umount", str(tmp_path / "nss")], capture_output=True)


@pytest.mark.usefixtures("read_only")
def test_read_only_database_is_left_alone(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path
) -> None:
    db, before = installed
    # As root, file modes do not stop writes; a read-only bind mount does.
    directory = str(db.directory)
    if subprocess.run(["mount", "--bind", directory, directory], capture_output=True).returncode:
        pytest.skip("cannot bind-mount (not root?)")
    subprocess.run(["mount", "-o", "remount,ro,bind", directory], check=True)
    key = ec_key()
    with pytest.raises(NssError, match=r"read-only") as raised:
        db.install_identity(NICK, key, pki.leaf(key), [pki.inter], work_dir=work)
    # Nothing was removed, so the message must not claim a restore.
    assert "nothing was changed" in str(raised.value)
    assert "restored" not in str(raised.value)
    assert snapshot(db) == before


# -- crash recovery: a child process dies (os._exit, no cleanup) at each point of the swap ----

CRASHED = 17


def _die() -> NoReturn:
    os._exit(CRASHED)


def crash_in_child(action: object) -> None:
    """Run ``action`` in a forked child that is expected to die with status CRASHED."""
    assert callable(action)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns to pytest
        try:
            action()
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == CRASHED


def _crash_around(owner: object, name: str, *, after: bool, db: NssDatabase) -> None:
    """Die before/after ``owner.name`` runs; for NssDatabase methods only on ``db`` itself
    (not on the copy the trial run uses), for ``clear`` only once a journal exists."""
    real = getattr(owner, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        if args and isinstance(args[0], NssDatabase) and args[0].database != db.database:
            return real(*args, **kwargs)
        if name == "clear" and not (Path(str(args[0])) / swap.JOURNAL).exists():
            return real(*args, **kwargs)
        if after:
            real(*args, **kwargs)
        _die()

    setattr(owner, name, wrapper)


@pytest.mark.parametrize(
    ("owner", "name", "after", "outcome", "winner"),
    [
        (fsio, "atomic_write_text", False, "nothing", "old"),  # backup, no journal
        (NssDatabase, "purge", False, "untouched", "old"),  # journal written, nothing done
        (NssDatabase, "purge", True, "restored", "old"),  # nickname empty
        (NssDatabase, "import_pkcs12", True, "completed", "new"),  # before the checks
        (swap, "clear", False, "completed", "new"),  # checked, journal not yet removed
    ],
    ids=["before-journal", "journaled", "purged", "imported", "verified"],
)
def test_recover_after_crash(
    installed: tuple[NssDatabase, Snapshot],
    pki: Pki,
    work: Path,
    owner: object,
    name: str,
    after: bool,
    outcome: str,
    winner: str,
) -> None:
    db, before = installed
    key = ec_key()
    leaf = pki.leaf(key)

    def action() -> None:
        _crash_around(owner, name, after=after, db=db)
        db.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)

    crash_in_child(action)
    assert db.recover(work) == outcome
    assert os.listdir(work) == []
    if winner == "old":
        assert snapshot(db) == before
    else:
        assert_single_identity(db, leaf)
    assert db.recover(work) == "nothing"


@pytest.fixture
def installed_same_key(
    anchored: NssDatabase, pki: Pki, work: Path
) -> tuple[NssDatabase, Snapshot, ec.EllipticCurvePrivateKey]:
    key = ec_key()
    anchored.install_identity(NICK, key, pki.leaf(key, age_hours=2), [pki.inter], work_dir=work)
    return anchored, snapshot(anchored), key


def _no_export(*args: object, **kwargs: object) -> None:
    raise AssertionError("the backup of a reused key must not need pk12util -o")


@pytest.mark.usefixtures("no_trial")
def test_same_key_backup_without_pk12util_rolls_back(
    installed_same_key: tuple[NssDatabase, Snapshot, ec.EllipticCurvePrivateKey],
    pki: Pki,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Key reuse: the backup is written from the key we hold, and a rollback restores it.
    db, before, key = installed_same_key
    monkeypatch.setattr(NssDatabase, "export_pkcs12", _no_export)

    def injected(*args: object) -> None:
        raise NssError("injected check failure")

    monkeypatch.setattr(swap, "check_installed", injected)
    with pytest.raises(NssError, match=r"injected.*previous certificate was restored"):
        db.install_identity(NICK, key, pki.leaf(key, age_hours=1), [pki.inter], work_dir=work)
    assert snapshot(db) == before
    assert os.listdir(work) == []


def test_same_key_recover_after_crash_with_nickname_empty(
    installed_same_key: tuple[NssDatabase, Snapshot, ec.EllipticCurvePrivateKey],
    pki: Pki,
    work: Path,
) -> None:
    db, before, key = installed_same_key

    def action() -> None:
        NssDatabase.export_pkcs12 = _no_export  # type: ignore[method-assign,assignment]
        _crash_around(NssDatabase, "purge", after=True, db=db)
        db.install_identity(NICK, key, pki.leaf(key, age_hours=1), [pki.inter], work_dir=work)

    crash_in_child(action)
    assert db.certificates(NICK) == []
    assert db.recover(work) == "restored"
    assert snapshot(db) == before
    assert os.listdir(work) == []


def test_recover_after_crash_inside_import(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path
) -> None:
    # pk12util killed between storing the key and the certificate: new key, no certificate.
    db, before = installed
    key = ec_key()
    leaf = pki.leaf(key)

    def action() -> None:
        real = NssDatabase.import_pkcs12

        def half_import(self: NssDatabase, p12: Path, pw: Path, what: str) -> None:
            real(self, p12, pw, what)
            if self.database != db.database:
                return
            self.run("certutil", ["-D", "-n", NICK], "drop the certificate, keep the key")
            _die()

        NssDatabase.import_pkcs12 = half_import  # type: ignore[method-assign,assignment]
        db.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)

    crash_in_child(action)
    assert key_id(leaf) in db.key_ids()
    assert db.recover(work) == "restored"
    assert snapshot(db) == before  # the stray new key is gone too


@pytest.mark.usefixtures("no_trial")
def test_recover_restores_unverifiable_new_identity(
    installed: tuple[NssDatabase, Snapshot], work: Path
) -> None:
    db, before = installed
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(_name("Other Root"), _name("Other Root"), root_key.public_key(), root_key, ca=True)
    other = Pki(root, root, root_key)
    key = ec_key()
    leaf = other.leaf(key)

    def action() -> None:
        _crash_around(NssDatabase, "import_pkcs12", after=True, db=db)
        db.install_identity(NICK, key, leaf, [], work_dir=work)

    crash_in_child(action)
    assert db.fingerprints(NICK) == [fingerprint(leaf)]
    assert db.recover(work) == "restored"
    assert snapshot(db) == before


def test_install_recovers_first(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path
) -> None:
    db, _ = installed
    key = ec_key()
    leaf = pki.leaf(key)

    def action() -> None:
        _crash_around(NssDatabase, "purge", after=True, db=db)
        db.install_identity(NICK, key, leaf, [pki.inter], work_dir=work)

    crash_in_child(action)
    assert db.certificates(NICK) == []
    assert db.install_identity(NICK, key, leaf, [pki.inter], work_dir=work).status == "replaced"
    assert_single_identity(db, leaf)


def test_recover_refuses_journal_of_other_database(
    installed: tuple[NssDatabase, Snapshot], pki: Pki, work: Path, tmp_path: Path
) -> None:
    db, _ = installed
    key = ec_key()

    def action() -> None:
        _crash_around(NssDatabase, "purge", after=False, db=db)
        db.install_identity(NICK, key, pki.leaf(key), [pki.inter], work_dir=work)

    crash_in_child(action)
    other = NssDatabase(f"sql:{tmp_path / 'other'}")
    other.ensure_exists()
    with pytest.raises(NssError, match="not for"):
        other.recover(work)
    assert db.recover(work) == "untouched"
