"""The swap rehearsed on a copy of the database, so the real one rarely has to roll back.

A rollback is worse than it looks: a pluto that holds the old certificate cannot use it
again after it was deleted and re-imported (its NSS cache keeps a stale object; whack
--rereadcerts fails with "could not extract CKAID" until pluto restarts). A PKCS#12 NSS
rejects, a chain that does not verify, a nickname NSS will not honour all fail here, before
the real database is touched.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography import x509

from oeagent.errors import NssError
from oeagent.nss.database import NssDatabase
from oeagent.nss.identity import check_installed
from oeagent.nss.password import private_temp_file


def rehearse(
    db: NssDatabase,
    nickname: str,
    cert: x509.Certificate,
    p12: bytes,
    p12_password: bytes,
    verify: bool,
    work_dir: Path,
    current: list[x509.Certificate],
) -> None:
    """Purge, import and check on a private copy of ``db``; raise NssError saying nothing
    was changed when any step fails. ``current``: what ``db`` holds under the nickname, as
    the caller has just read it (the copy starts with the same)."""
    with tempfile.TemporaryDirectory(prefix="nss-trial-", dir=work_dir) as tmp:
        copy = db.copy_to(Path(tmp))
        try:
            copy.purge(nickname, current)
            with private_temp_file(p12) as p12_file, private_temp_file(p12_password) as pw:
                copy.import_pkcs12(p12_file, pw, "importing the new certificate")
            check_installed(copy, nickname, cert, verify)
        except NssError as exc:
            # Same class: a locked database stays "try again later" (NssLockedError).
            raise type(exc)(
                f"the new certificate for {nickname!r} failed a trial install on a copy of "
                f"the database, so nothing was changed: {exc}"
            ) from exc
