"""The checks around an identity swap: what may go in, and whether it went in whole.

Refused before anything is touched: a key that is not the certificate's, a CA certificate as
the host's, a non-CA certificate in the chain, and a subject NSS would file under another
nickname. Required afterwards: exactly the new certificate under the nickname, its key, and
(optionally) a chain that ``certutil -V`` accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from oeagent.errors import NssError
from oeagent.nss.certs import fingerprint, is_ca, key_id
from oeagent.nss.database import Contents, NssDatabase
from oeagent.nss.tools import Started

IdentityKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# A PKCS#12 of ours only carries the key to pk12util, in a 0600 file whose password is in
# another 0600 file of the same owner (the swap's backup: next to it), and lives for one
# swap: its key derivation guards nothing the files' modes do not. 2,048 rounds (OpenSSL's
# long-time default) instead of cryptography's 20,000 save ~9 ms building it and ~15 ms in
# each pk12util -i, one of them inside the window without a certificate.
P12_KDF_ROUNDS = 2048


def check_identity(
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


def check_subject_free(contents: Contents, nickname: str, cert: x509.Certificate) -> None:
    """Refuse when NSS would file the new certificate under another nickname.

    NSS keeps one nickname per subject: an empty-subject certificate (Let's Encrypt's newer
    profiles) joins ANY other empty-subject certificate already in the database.
    """
    for other, certs in contents.certificates.items():
        if other != nickname and any(c.subject == cert.subject for c in certs):
            subject = cert.subject.rfc4514_string() or "empty subject"
            raise NssError(
                f"the database already has a certificate with the same subject ({subject}) "
                f"under nickname {other!r}; NSS would file the new certificate there, not "
                f"under {nickname!r}. Remove it or use that nickname"
            )


def pkcs12_bytes(
    nickname: str,
    key: IdentityKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: bytes,
) -> bytes:
    # friendlyName = nickname; the chain goes in without trust (NSS derives its nicknames).
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(P12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        nickname.encode("utf-8"), key, cert, list(chain) or None, encryption
    )


def verifies(db: NssDatabase, nickname: str) -> bool:
    try:
        db.verify(nickname)
    except NssError:
        return False
    return True


def check_installed(db: NssDatabase, nickname: str, cert: x509.Certificate, verify: bool) -> None:
    """Exactly the new certificate under the nickname, its key, and (``verify``) a chain
    certutil -V accepts; raise NssError for the first that is not so, in that order.

    The three are read-only questions, asked at once (three processes instead of three in a
    row: this runs on the trial copy and right after the real import).
    """
    keys = Started(db.key_ids)
    chain = Started(partial(db.verify, nickname)) if verify else None
    try:
        fps = db.fingerprints(nickname)
        if fps != [fingerprint(cert)]:
            hint = ""
            if not fps and not cert.subject.rdns:
                # NSS files certificates by subject: an empty-subject certificate lands under
                # the nickname of any empty-subject certificate already in the database.
                hint = " (another certificate with the same, empty, subject is in the database?)"
            raise NssError(
                f"after the import {len(fps)} certificate(s) are under {nickname!r}, "
                f"expected only the new one{hint}"
            )
        if key_id(cert) not in keys.result():
            raise NssError(f"the private key of the new certificate for {nickname!r} is missing")
        if chain is not None:
            chain.result()
    finally:  # nothing may still run when a rollback starts changing the database
        keys.wait()
        if chain is not None:
            chain.wait()
