"""The swap's journal and backup: written before the first change, used to finish or undo it.

In the caller's private work directory: the journal (what was under the nickname, what is
coming, which nicknames existed), a PKCS#12 backup of the old identity with its password
file, and the old certificates as PEM (pk12util exports only certificates that have a key).
The journal is written last and removed first, so backup files without a journal mean that
nothing had changed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from oeagent import fsio
from oeagent.errors import NssError
from oeagent.nss.certs import fingerprint, key_id, load_pem_bundle, pem
from oeagent.nss.database import NssDatabase
from oeagent.nss.identity import IdentityKey, pkcs12_bytes

JOURNAL = "nss-swap.json"
BACKUP_P12 = "nss-swap-backup.p12"
BACKUP_PASSWORD = "nss-swap-backup.pass"  # noqa: S105 - a file name
BACKUP_PEM = "nss-swap-backup.pem"
VERSION = 1

Undone = Literal["unchanged", "cleaned", "restored"]
"""What ``restore`` found and did: ``unchanged`` (the old identity was never removed and
nothing was added), ``cleaned`` (never removed; what the import added was taken out) or
``restored`` (it had been removed and was put back)."""


def backup(
    db: NssDatabase,
    nickname: str,
    current: list[x509.Certificate],
    key: IdentityKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    verify: bool,
    work_dir: Path,
    keys: set[str],
    nicknames: Sequence[str],
) -> dict[str, Any]:
    """Save what is under the nickname, then the journal; nothing is changed yet.

    ``current``, ``keys`` (the key ids) and ``nicknames`` are what the database held when the
    caller read it for this swap; nothing has changed it since.
    """
    clear(work_dir)
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
                work_dir / BACKUP_P12, pkcs12_bytes(nickname, key, keyed, (), password)
            )
        else:
            db.export_pkcs12(nickname, work_dir / BACKUP_P12, work_dir / BACKUP_PASSWORD)
        fsio.fsync_dir(work_dir)
    fsio.atomic_write(work_dir / BACKUP_PEM, pem(current))
    journal = {
        "version": VERSION,
        "database": db.database,
        "nickname": nickname,
        "old_fingerprints": sorted(fingerprint(c) for c in current),
        "old_key_ids": old_key_ids,
        "backup_p12": has_p12,
        "new_fingerprint": fingerprint(cert),
        "new_key_id": key_id(cert),
        "chain_fingerprints": sorted(fingerprint(c) for c in chain),
        "nicknames_before": sorted(set(nicknames)),
        "verify": verify,
        "started": time.time(),
    }
    fsio.atomic_write_text(work_dir / JOURNAL, json.dumps(journal, indent=1) + "\n")
    return journal


def read(db: NssDatabase, work_dir: Path) -> dict[str, Any] | None:
    """The journal of an interrupted swap on ``db``, or None when there is none."""
    path = work_dir / JOURNAL
    try:
        journal: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NssError(f"cannot read the swap journal {path}: {exc}") from None
    if not isinstance(journal, dict):
        raise NssError(f"the swap journal {path} is not a JSON object; not touching it")
    if journal.get("version") != VERSION or journal.get("database") != db.database:
        raise NssError(f"the swap journal {path} is not for {db.database}; not touching it")
    # Recovery purges, imports and deletes keys from these fields: a damaged one is found
    # out here, before the first change, not halfway through.
    for key, kind in _FIELDS.items():
        value = journal.get(key)
        if not isinstance(value, kind) or (
                isinstance(value, list) and not all(isinstance(item, str) for item in value)):
            raise NssError(f"the swap journal {path} is damaged ({key}); not touching it; "
                           "its backup is in the same directory")
    return journal


_FIELDS: dict[str, type] = {
    "nickname": str, "old_fingerprints": list, "old_key_ids": list, "backup_p12": bool,
    "new_fingerprint": str, "new_key_id": str, "chain_fingerprints": list,
    "nicknames_before": list, "verify": bool,
}


def untouched(db: NssDatabase, journal: dict[str, Any]) -> bool:
    """True when the nickname still holds exactly what it held before the swap."""
    return (
        db.fingerprints(str(journal["nickname"])) == sorted(journal["old_fingerprints"])
        and set(journal["old_key_ids"]) <= db.key_ids()
    )


def restore(db: NssDatabase, journal: dict[str, Any], work_dir: Path) -> Undone:
    """Put back what the journal's backup holds and remove what the swap added."""
    nickname = str(journal["nickname"])
    outcome: Undone = "unchanged"
    if not untouched(db, journal):
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
        if not untouched(db, journal):
            raise NssError(f"after restoring, {nickname!r} does not hold its previous certificate")
        outcome = "restored"
    elif _remove_added_chain(db, journal):
        outcome = "cleaned"
    # A kill inside pk12util -i can leave the new key without its certificate.
    new_key = str(journal["new_key_id"])
    if new_key not in journal["old_key_ids"] and new_key in db.key_ids():
        db.delete_key(new_key)
        outcome = "restored" if outcome == "restored" else "cleaned"
    return outcome


def _remove_added_chain(db: NssDatabase, journal: dict[str, Any]) -> bool:
    """Delete intermediates the failed import added (never anything that was there)."""
    before = set(journal["nicknames_before"])
    chain = set(journal["chain_fingerprints"])
    removed = False
    for entry in db.list_certificates():
        if entry.nickname in before or entry.nickname == journal["nickname"]:
            continue
        certs = db.certificates(entry.nickname)
        if certs and all(fingerprint(c) in chain for c in certs):
            for _ in certs:
                db.run("certutil", ["-D", "-n", entry.nickname], f"removing {entry.nickname!r}")
            removed = True
    return removed


def clear(work_dir: Path) -> None:
    # The journal goes first: without it, leftover backup files mean nothing.
    for name in (JOURNAL, BACKUP_P12, BACKUP_PASSWORD, BACKUP_PEM):
        with contextlib.suppress(FileNotFoundError):
            (work_dir / name).unlink()
    if work_dir.exists():
        fsio.fsync_dir(work_dir)
