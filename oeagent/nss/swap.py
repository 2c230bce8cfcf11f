"""Install or replace the host identity (key + certificate + chain) under a stable nickname.

The trap: importing a renewed certificate adds a second certificate (and key) under the same
nickname, and ``certutil -D``/``-F -n`` delete the newest first. So a replacement is a
journaled swap in a caller-given private work directory:

0. rehearse steps 2-4 on a copy of the database (``oeagent.nss.rehearsal`` says why a
   rollback is to be avoided, not just survived);
1. back up everything under the nickname and write the journal (``oeagent.nss.journal``)
   -- nothing has changed yet;
2. delete everything under the nickname (the window without a certificate starts);
3. import the new PKCS#12 (the window ends);
4. check: exactly one certificate under the nickname, the new one, with its key, and
   ``certutil -V`` passes (``oeagent.nss.identity``);
5. remove the journal and the backup.

Any failure in 2-4 puts the backup back and raises NssError saying truthfully what the
database holds now: unchanged, cleaned of what the import added, or restored. A process
killed in 2-5 leaves the journal; ``recover()`` (also run at the start of every install)
finishes the job: it keeps a complete, verified new identity, and restores the backup in
every other case.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from oeagent import fsio, names
from oeagent.errors import NssError, OeagentError
from oeagent.nss.certs import fingerprint, key_id
from oeagent.nss.database import Contents, NssDatabase
from oeagent.nss.identity import (
    IdentityKey,
    check_identity,
    check_installed,
    check_subject_free,
    pkcs12_bytes,
    verifies,
)
from oeagent.nss.journal import JOURNAL, Undone, backup, clear, read, restore, untouched
from oeagent.nss.password import private_temp_file
from oeagent.nss.rehearsal import rehearse

log = logging.getLogger(__name__)

Status = Literal["installed", "replaced", "unchanged", "repaired"]
RecoveryOutcome = Literal["nothing", "completed", "untouched", "restored"]

__all__ = ["JOURNAL", "IdentityKey", "InstallResult", "install_identity", "recover"]

# What the database holds after a failed swap was undone, said to the user.
_AFTER_FAILURE: dict[Undone, str] = {
    "unchanged": "nothing was changed: the previous certificate is still in place",
    "cleaned": "the previous certificate was never removed, and what the import had added "
    "was taken out again",
    "restored": "the previous certificate was restored (a running pluto that had loaded it "
    "needs a restart to use it again)",
}


@dataclass(frozen=True)
class InstallResult:
    status: Status
    fingerprint: str
    """SHA-256 of the leaf now under the nickname, lower-case hex."""
    swap_window: float | None = None
    """Seconds the nickname had no certificate (only for ``replaced``)."""
    verified: bool = False
    """``certutil -V`` accepted the identity now under the nickname, in this call: callers
    need not run it again."""

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
    contents: Contents | None = None,
) -> InstallResult:
    """Make ``cert`` (with ``key`` and its intermediates) the only identity under ``nickname``.

    ``verify`` also requires ``certutil -V`` to pass, so the chain's anchor must be trusted
    in this database already. ``contents``: the database as the caller has just read it
    (``NssDatabase.contents``, nothing changed since); read here otherwise. Raises NssError;
    after an error the database holds what it held before (the message says so, or says that
    restoring failed too).
    """
    names.check_nickname(nickname)
    check_identity(key, cert, chain)
    fsio.ensure_private_dir(work_dir)
    if (work_dir / JOURNAL).exists():
        log.warning("an earlier certificate swap was interrupted; recovering first")
        recover(db, work_dir)
        contents = None  # recovering changed the database
    new_fp = fingerprint(cert)
    p12_password = secrets.token_urlsafe(24).encode("ascii")
    p12 = pkcs12_bytes(nickname, key, cert, chain, p12_password)
    if contents is None:
        contents = db.contents()
    current = contents.certificates.get(nickname, [])
    # One key listing for the whole swap: the unchanged check and the backup (which keys the
    # old certificates have) ask the same question of the same, untouched, database.
    keys = db.key_ids() if current else set()

    if [fingerprint(c) for c in current] == [new_fp] and key_id(cert) in keys:
        if not verify or verifies(db, nickname):
            return InstallResult("unchanged", new_fp, verified=verify)
        # Same leaf, but the chain does not build (say an intermediate was deleted):
        # re-importing the identical p12 adds what is missing and no duplicate leaf.
        with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
            db.import_pkcs12(p12_file, pw, f"re-importing {nickname!r}")
        db.verify(nickname)
        return InstallResult("repaired", new_fp, verified=True)

    check_subject_free(contents, nickname, cert)
    if current:
        rehearse(db, nickname, cert, p12, p12_password, verify, work_dir, current)
    try:
        journal = backup(
            db, nickname, current, key, cert, chain, verify, work_dir, keys, contents.nicknames()
        )
    except BaseException as exc:
        clear(work_dir)
        if isinstance(exc, NssError):  # pk12util -o fails on a read-only database, say
            raise _failed(nickname, exc, _AFTER_FAILURE["unchanged"]) from exc
        raise
    window: float | None = None
    try:
        with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
            started = time.monotonic()
            if current:
                # What was read for this swap and backed up; purge goes on should more be there.
                db.purge(nickname, current)
            db.import_pkcs12(p12_file, pw, f"importing the new certificate for {nickname!r}")
            if current:
                window = time.monotonic() - started
        check_installed(db, nickname, cert, verify)
    except BaseException as exc:
        # Also on KeyboardInterrupt/SystemExit: put the old identity back, then let it go on.
        try:
            undone = restore(db, journal, work_dir)
        except (OeagentError, OSError, ValueError) as again:
            raise NssError(
                f"installing the certificate for {nickname!r} failed ({exc}), and restoring "
                f"the previous state failed too ({again}); the backup and journal are kept in "
                f"{work_dir} for 'recover'"
            ) from exc
        clear(work_dir)
        if not isinstance(exc, Exception):
            raise
        after = _AFTER_FAILURE[undone] if current else "nothing was left"
        raise _failed(nickname, exc, after) from exc
    clear(work_dir)
    if window is not None:
        log.info("replaced %r; the nickname was empty for %.3f s", nickname, window)
    return InstallResult("replaced" if current else "installed", new_fp, window, verify)


def _failed(nickname: str, exc: Exception, after: str) -> NssError:
    # Same class, so a locked database stays "try again later" (NssLockedError).
    error = type(exc) if isinstance(exc, NssError) else NssError
    return error(f"installing the certificate for {nickname!r} failed: {exc}; {after}")


def recover(db: NssDatabase, work_dir: Path) -> RecoveryOutcome:
    """Bring a swap interrupted by a crash to a consistent end, using its journal.

    ``completed``: the new identity was complete and verified, kept. ``untouched``: the swap
    had not changed anything yet. ``restored``: the backup was put back. ``nothing``: no
    journal. Raises NssError when restoring fails (the journal is then kept).
    """
    journal = read(db, work_dir)
    if journal is None:
        clear(work_dir)  # a backup written before its journal: nothing had changed
        return "nothing"
    nickname = str(journal["nickname"])
    fps = db.fingerprints(nickname)
    if fps == [journal["new_fingerprint"]] and journal["new_key_id"] in db.key_ids():
        if not journal["verify"] or verifies(db, nickname):
            clear(work_dir)
            log.warning("interrupted swap of %r: the new certificate is complete, kept", nickname)
            return "completed"
    if untouched(db, journal):
        restore(db, journal, work_dir)  # only removes leftovers of the import, if any
        clear(work_dir)
        log.warning("interrupted swap of %r had not replaced anything", nickname)
        return "untouched"
    restore(db, journal, work_dir)
    clear(work_dir)
    log.warning("interrupted swap of %r: the previous certificate was restored", nickname)
    return "restored"
