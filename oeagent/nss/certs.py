"""Facts about certificates that oeagent computes itself, without asking NSS.

Certificates are matched by SHA-256 fingerprint and keys by NSS's key id (CKA_ID), never by
name: NSS files every certificate with the same subject under one nickname, whatever name it
was given.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from oeagent.errors import NssError

_ANCHOR_NICK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}$")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def key_id(cert: x509.Certificate) -> str:
    """The CKA_ID NSS gives the private key of ``cert`` (how certutil -K names keys)."""
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        raw = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(public, rsa.RSAPublicKey):
        modulus = public.public_numbers().n
        raw = modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")
    else:
        raise NssError(f"unsupported key type {type(public).__name__} (ECDSA or RSA only)")
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise NssError(f"not a PEM certificate bundle: {exc}") from None


def pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def anchor_nickname(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    if _ANCHOR_NICK.fullmatch(common_name):
        return common_name
    return f"oeagent-anchor-{fingerprint(cert)[:16]}"


def trusted_ca(trust: str) -> bool:
    """True for certutil trust flags that make a certificate a TLS CA anchor (``CT,,``)."""
    ssl_flags = trust.split(",")[0]
    return "C" in ssl_flags and "T" in ssl_flags
