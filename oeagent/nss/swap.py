"""Install or replace the host identity (key + certificate + chain) under a stable nickname.

The trap: importing a renewed certificate adds a second certificate (and key) under the same
nickname, and ``certutil -D``/``-F -n`` delete the newest first. So a replacement is a
journaled swap in a caller-given private work directory:

0. rehearse steps 2-4 on a copy of the database (see ``_trial`` for why a rollback is to be
   avoided, not just survived);
1. back up everything under the nickname (``pk12util -o``, or a PKCS#12 we write ourselves
   when the old certificate uses the key being installed, plus the certificates as PEM in
   case one has no key), then write the journal (atomically) -- nothing has changed yet;
2. delete everything under the nickname (the window without a certificate starts);
3. import the new PKCS#12 (the window ends);
4. check: exactly one certificate under the nickname, the new one, with its key, and
   ``certutil -V`` passes;
5. remove the journal and the backup.

Any failure in 2-4 puts the backup back and raises NssError. A process killed in 2-5 leaves
the journal; ``recover()`` (also run at the start of every install) finishes the job: it keeps
a complete, verified new identity, and restores the backup in every other case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from oeagent import fsio, names
from oeagent.errors import NssError, OeagentError
from oeagent.nss.database import NssDatabase, fingerprint, is_ca, key_id, load_pem_bundle
from oeagent.nss.password import private_temp_file

log = logging.getLogger(__name__)

IdentityKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Status = Literal["installed", "replaced", "unchanged", "repaired"]
RecoveryOutcome = Literal["nothing", "completed", "untouched", "restored"]

JOURNAL = "nss-swap.json"
BACKUP_P12 = "nss-swap-backup.p12"
BACKUP_PASSWORD = "nss-swap-backup.pass"  # noqa: S105 - a file name
BACKUP_PEM = "nss-swap-backup.pem"
_JOURNAL_VERSION = 1


@dataclass(frozen=True)
class InstallResult:
    status: Status
    fingerprint: str
    """SHA-256 of the leaf now under the nickname, lower-case hex."""
    swap_window: float | None = None
    """Seconds the nickname had no certificate (only for ``replaced``)."""

    def __str__(self) -> str:
        return self.status


def install_identity(
    db: NssDatabase,
    nickname: str,
    key: IdentityKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    work_dir: Path,
    *,
    verify: bool = True,
) -> InstallResult:
    """Make ``cert`` (with ``key`` and its intermediates) the only identity under ``nickname``.

    ``verify`` also requires ``certutil -V`` to pass, so the chain's anchor must be trusted
    in this database already. Raises NssError; after an error the database holds what it
    held before (the message says so, or says that restoring failed too).
    """
    names.check_nickname(nickname)
    _check_identity(key, cert, chain)
    fsio.ensure_private_dir(work_dir)
    if (work_dir / JOURNAL).exists():
        log.warning("an earlier certificate swap was interrupted; recovering first")
        recover(db, work_dir)
    new_fp = fingerprint(cert)
    p12_password = secrets.token_urlsafe(24).encode("ascii")
    p12 = _pkcs12_bytes(nickname, key, cert, chain, p12_password)
    current = db.certificates(nickname)

    if [fingerprint(c) for c in current] == [new_fp] and key_id(cert) in db.key_ids():
        if not verify or _verifies(db, nickname):
            return InstallResult("unchanged", new_fp)
        # Same leaf, but the chain does not build (say an intermediate was deleted):
        # re-importing the identical p12 adds what is missing and no duplicate leaf.
        with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
            db.import_pkcs12(p12_file, pw, f"re-importing {nickname!r}")
        db.verify(nickname)
        return InstallResult("repaired", new_fp)

    _check_subject_free(db, nickname, cert)
    if current:
        _trial(db, nickname, cert, p12, p12_password, verify, work_dir)
    try:
        journal = _backup(db, nickname, current, key, cert, chain, verify, work_dir)
    except BaseException:
        _clear(work_dir)
        raise
    window: float | None = None
    try:
        with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
            started = time.monotonic()
            if current:
                db.purge(nickname)
            db.import_pkcs12(p12_file, pw, f"importing the new certificate for {nickname!r}")
            if current:
                window = time.monotonic() - started
        _check_installed(db, nickname, cert, verify)
    except BaseException as exc:
        # Also on KeyboardInterrupt/SystemExit: put the old identity back, then let it go on.
        try:
            _restore(db, journal, work_dir)
        except (OeagentError, OSError, ValueError) as again:
            raise NssError(
                f"installing the certificate for {nickname!r} failed ({exc}), and restoring "
                f"the previous state failed too ({again}); the backup and journal are kept in "
                f"{work_dir} for 'recover'"
            ) from exc
        _clear(work_dir)
        if not isinstance(exc, Exception):
            raise
        previous = (
            "the previous certificate was restored (a running pluto that had loaded it needs "
            "a restart to use it again)"
            if current
            else "nothing was left"
        )
        raise NssError(
            f"installing the certificate for {nickname!r} failed: {exc}; {previous}"
        ) from exc
    _clear(work_dir)
    if window is not None:
        log.info("replaced %r; the nickname was empty for %.3f s", nickname, window)
    return InstallResult("replaced" if current else "installed", new_fp, window)


def recover(db: NssDatabase, work_dir: Path) -> RecoveryOutcome:
    """Bring a swap interrupted by a crash to a consistent end, using its journal.

    ``completed``: the new identity was complete and verified, kept. ``untouched``: the swap
    had not changed anything yet. ``restored``: the backup was put back. ``nothing``: no
    journal. Raises NssError when restoring fails (the journal is then kept).
    """
    path = work_dir / JOURNAL
    try:
        journal: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        _clear(work_dir)  # a backup written before its journal: nothing had changed
        return "nothing"
    except (OSError, ValueError) as exc:
        raise NssError(f"cannot read the swap journal {path}: {exc}") from None
    if journal.get("version") != _JOURNAL_VERSION or journal.get("database") != db.database:
        raise NssError(f"the swap journal {path} is not for {db.database}; not touching it")
    nickname = str(journal["nickname"])
    fps = db.fingerprints(nickname)
    if fps == [journal["new_fingerprint"]] and journal["new_key_id"] in db.key_ids():
        if not journal["verify"] or _verifies(db, nickname):
            _clear(work_dir)
            log.warning("interrupted swap of %r: the new certificate is complete, kept", nickname)
            return "completed"
    if _untouched(db, journal):
        _restore(db, journal, work_dir)  # only removes leftovers of the import, if any
        _clear(work_dir)
        log.warning("interrupted swap of %r had not replaced anything", nickname)
        return "untouched"
    _restore(db, journal, work_dir)
    _clear(work_dir)
    log.warning("interrupted swap of %r: the previous certificate was restored", nickname)
    return "restored"


def _check_identity(
    key: IdentityKey, cert: x509.Certificate, chain: Sequence[x509.Certificate]
) -> None:
    """Refuse, before touching anything, an identity NSS would take but pluto cannot use."""
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise NssError("the private key does not belong to the certificate")
    if is_ca(cert):
        raise NssError("the certificate is a CA certificate, not a host certificate")
    for extra in chain:
        if not is_ca(extra):
            raise NssError(
                f"the chain holds a non-CA certificate ({extra.subject.rfc4514_string()})"
            )


def _check_subject_free(db: NssDatabase, nickname: str, cert: x509.Certificate) -> None:
    """Refuse when NSS would file the new certificate under another nickname.

    NSS keeps one nickname per subject: an empty-subject certificate (Let's Encrypt's newer
    profiles) joins ANY other empty-subject certificate already in the database.
    """
    for other, certs in db.all_certificates().items():
        if other != nickname and any(c.subject == cert.subject for c in certs):
            subject = cert.subject.rfc4514_string() or "empty subject"
            raise NssError(
                f"the database already has a certificate with the same subject ({subject}) "
                f"under nickname {other!r}; NSS would file the new certificate there, not "
                f"under {nickname!r}. Remove it or use that nickname"
            )


def _trial(
    db: NssDatabase,
    nickname: str,
    cert: x509.Certificate,
    p12: bytes,
    p12_password: bytes,
    verify: bool,
    work_dir: Path,
) -> None:
    """Do the whole swap on a copy of the database first, so the real one rarely rolls back.

    A rollback is worse than it looks: a pluto that holds the old certificate cannot use it
    again after it was deleted and re-imported (its NSS cache keeps a stale object; whack
    --rereadcerts fails with "could not extract CKAID" until pluto restarts). A p12 NSS
    rejects, a chain that does not verify, a nickname NSS will not honour all fail here.
    """
    with tempfile.TemporaryDirectory(prefix="nss-trial-", dir=work_dir) as tmp:
        copy = db.copy_to(Path(tmp))
        try:
            copy.purge(nickname)
            with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
                copy.import_pkcs12(p12_file, pw, "importing the new certificate")
            _check_installed(copy, nickname, cert, verify)
        except NssError as exc:
            raise NssError(
                f"the new certificate for {nickname!r} failed a trial install on a copy of "
                f"the database, so nothing was changed: {exc}"
            ) from exc


def _pkcs12_bytes(
    nickname: str,
    key: IdentityKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: bytes,
) -> bytes:
    # friendlyName = nickname; the chain goes in without trust (NSS derives its nicknames).
    return pkcs12.serialize_key_and_certificates(
        nickname.encode("utf-8"),
        key,
        cert,
        list(chain) or None,
        serialization.BestAvailableEncryption(password),
    )


def _verifies(db: NssDatabase, nickname: str) -> bool:
    try:
        db.verify(nickname)
    except NssError:
        return False
    return True


def _backup(
    db: NssDatabase,
    nickname: str,
    current: list[x509.Certificate],
    key: IdentityKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    verify: bool,
    work_dir: Path,
) -> dict[str, Any]:
    """Save what is under the nickname, then the journal; nothing is changed yet."""
    _clear(work_dir)
    keys = db.key_ids()
    old_key_ids = sorted({key_id(c) for c in current} & keys)
    has_p12 = bool(old_key_ids)
    if has_p12:
        password = secrets.token_urlsafe(24).encode("ascii")
        fsio.atomic_write(work_dir / BACKUP_PASSWORD, password)
        if old_key_ids == [key_id(cert)]:
            # The old identity uses the key being installed (key reuse, the default), which
            # we hold: write its backup ourselves. pk12util -o (NSS 3.87) runs 600,000 PBKDF2
            # rounds three times, about 0.36 s of CPU per renewal, for a file whose password
            # lies next to it. Certificates without the key follow from the PEM backup.
            keyed = next(c for c in current if key_id(c) == key_id(cert))
            fsio.atomic_write(
                work_dir / BACKUP_P12, _pkcs12_bytes(nickname, key, keyed, (), password)
            )
        else:
            db.export_pkcs12(nickname, work_dir / BACKUP_P12, work_dir / BACKUP_PASSWORD)
        fsio.fsync_dir(work_dir)
    # PEM too: pk12util exports only certificates that have a key.
    fsio.atomic_write(
        work_dir / BACKUP_PEM,
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in current),
    )
    journal = {
        "version": _JOURNAL_VERSION,
        "database": db.database,
        "nickname": nickname,
        "old_fingerprints": sorted(fingerprint(c) for c in current),
        "old_key_ids": old_key_ids,
        "backup_p12": has_p12,
        "new_fingerprint": fingerprint(cert),
        "new_key_id": key_id(cert),
        "chain_fingerprints": sorted(fingerprint(c) for c in chain),
        "nicknames_before": sorted({e.nickname for e in db.list_certificates()}),
        "verify": verify,
        "started": time.time(),
    }
    fsio.atomic_write_text(work_dir / JOURNAL, json.dumps(journal, indent=1) + "\n")
    return journal


def _check_installed(db: NssDatabase, nickname: str, cert: x509.Certificate, verify: bool) -> None:
    fps = db.fingerprints(nickname)
    if fps != [fingerprint(cert)]:
        hint = ""
        if not fps and not cert.subject.rdns:
            # NSS files certificates by subject: an empty-subject certificate lands under the
            # nickname of any empty-subject certificate already in the database.
            hint = " (another certificate with the same, empty, subject is in the database?)"
        raise NssError(
            f"after the import {len(fps)} certificate(s) are under {nickname!r}, "
            f"expected only the new one{hint}"
        )
    if key_id(cert) not in db.key_ids():
        raise NssError(f"the private key of the new certificate for {nickname!r} is missing")
    if verify:
        db.verify(nickname)


def _untouched(db: NssDatabase, journal: dict[str, Any]) -> bool:
    """True when the nickname still holds exactly what it held before the swap."""
    return (
        db.fingerprints(str(journal["nickname"])) == sorted(journal["old_fingerprints"])
        and set(journal["old_key_ids"]) <= db.key_ids()
    )


def _restore(db: NssDatabase, journal: dict[str, Any], work_dir: Path) -> None:
    """Put back what the journal's backup holds and remove what the swap added."""
    nickname = str(journal["nickname"])
    if not _untouched(db, journal):
        # Only now delete: a swap that failed before its first change (a read-only
        # database, say) must not fail again here and report a broken restore.
        db.purge(nickname)
        _remove_added_chain(db, journal)
        if journal["backup_p12"]:
            db.import_pkcs12(
                work_dir / BACKUP_P12, work_dir / BACKUP_PASSWORD, f"restoring {nickname!r}"
            )
        backup_pem = (work_dir / BACKUP_PEM).read_bytes()
        for old in load_pem_bundle(backup_pem) if backup_pem.strip() else []:
            if fingerprint(old) not in db.fingerprints(nickname):
                db.add_certificate(old, nickname, ",,")
        if not _untouched(db, journal):
            raise NssError(f"after restoring, {nickname!r} does not hold its previous certificate")
    else:
        _remove_added_chain(db, journal)
    # A kill inside pk12util -i can leave the new key without its certificate.
    new_key = str(journal["new_key_id"])
    if new_key not in journal["old_key_ids"] and new_key in db.key_ids():
        db.delete_key(new_key)


def _remove_added_chain(db: NssDatabase, journal: dict[str, Any]) -> None:
    """Delete intermediates the failed import added (never anything that was there)."""
    before = set(journal["nicknames_before"])
    chain = set(journal["chain_fingerprints"])
    for entry in db.list_certificates():
        if entry.nickname in before or entry.nickname == journal["nickname"]:
            continue
        certs = db.certificates(entry.nickname)
        if certs and all(fingerprint(c) in chain for c in certs):
            for _ in certs:
                db.run("certutil", ["-D", "-n", entry.nickname], f"removing {entry.nickname!r}")


def _clear(work_dir: Path) -> None:
    # The journal goes first: without it, leftover backup files mean nothing.
    for name in (JOURNAL, BACKUP_P12, BACKUP_PASSWORD, BACKUP_PEM):
        with contextlib.suppress(FileNotFoundError):
            (work_dir / name).unlink()
    if work_dir.exists():
        fsio.fsync_dir(work_dir)
