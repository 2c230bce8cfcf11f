"""Trust anchors: the CA certificates pluto trusts (``CT,,``), added idempotently.

Every self-signed CA certificate in pluto's database counts as a root for peers; the system
trust store is not used. An anchor is matched by fingerprint, never by nickname (NSS keeps
the nickname a certificate already has).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from oeagent.errors import NssError
from oeagent.nss.certs import anchor_nickname, fingerprint, is_ca, load_pem_bundle, pem, trusted_ca
from oeagent.nss.password import private_temp_file

if TYPE_CHECKING:
    from oeagent.nss.database import Contents, NssDatabase

log = logging.getLogger(__name__)

ANCHOR_TRUST = "CT,,"


def add_trust_anchor(
    db: NssDatabase,
    cert: x509.Certificate,
    nickname: str | None = None,
    contents: Contents | None = None,
) -> bool:
    """Trust ``cert`` as a CA for pluto (``CT,,``); False if it already was.

    A certificate already present under another nickname keeps that nickname (NSS
    files by subject); only its trust is set. ``contents``: the database as just read
    (``NssDatabase.contents``), which answers whether it is there; read here otherwise.
    """
    if not is_ca(cert):
        raise NssError(
            f"refusing to add {cert.subject.rfc4514_string() or 'a certificate'} as a trust "
            "anchor: it is not a CA certificate (basicConstraints CA:TRUE is missing)"
        )
    if contents is None:
        contents = db.contents()
    present = contents.nickname_of(cert)
    if present is not None:
        before = contents.trust(present)
        if all(trusted_ca(t) for t in before):
            return False
        # certutil -A on a certificate already present sets the trust of exactly that
        # certificate (-M would pick one by nickname, and cross-signed roots share one).
        db.add_certificate(cert, present, ANCHOR_TRUST)
        return db.trust(present) != before
    nick = nickname or anchor_nickname(cert)
    with private_temp_file(pem([cert])) as pem_file:
        db.run(
            "certutil",
            ["-A", "-n", nick, "-t", ANCHOR_TRUST, "-a", "-i", pem_file],
            f"adding trust anchor {nick!r}",
        )
    log.info("added trust anchor %r (%s)", nick, fingerprint(cert)[:16])
    return True


def add_trust_anchors(db: NssDatabase, certs: Sequence[x509.Certificate]) -> int:
    """Add every certificate of a bundle; the number newly added or newly trusted."""
    non_ca = [c.subject.rfc4514_string() for c in certs if not is_ca(c)]
    if non_ca:  # refuse the whole bundle before changing anything
        raise NssError(f"the trust anchor bundle holds non-CA certificates: {non_ca}")
    return sum(add_trust_anchor(db, c) for c in certs)


def add_trust_anchor_bundle(db: NssDatabase, path: Path) -> int:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NssError(f"cannot read trust anchor bundle {path}: {exc.strerror}") from None
    return add_trust_anchors(db, load_pem_bundle(data))
