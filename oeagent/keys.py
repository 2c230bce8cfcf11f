"""Private keys: generation, PEM round-trips, and the SPKI pins that identify a key publicly."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oeagent.errors import StateError

if TYPE_CHECKING:
    # Only for the hints: discovery reads pins through this module, and cryptography.x509
    # is ~40 ms of its start-up.
    from cryptography import x509

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def generate_key(algorithm: str) -> PrivateKey:
    """A new key for ``algorithm``: ``ecdsa-p256`` (default), ``rsa-2048`` or ``rsa-3072``."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def key_algorithm(key: PrivateKey | PublicKey) -> str:
    """The config name of ``key``'s algorithm, so a stored key can be checked against config."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        return f"ecdsa-{key.curve.name}"
    return f"rsa-{key.key_size}"


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key_pem(data: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise StateError(f"cannot read the {what}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise StateError(f"the {what} is neither ECDSA nor RSA")
    return key


def spki_der(obj: PrivateKey | PublicKey | x509.Certificate) -> bytes:
    public = (
        obj.public_key()
        if not isinstance(obj, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        else obj
    )
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(obj: PrivateKey | PublicKey | x509.Certificate) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo: the TLSA 3 1 1 pin of a key."""
    return hashlib.sha256(spki_der(obj)).hexdigest()


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return spki_der(cert) == spki_der(key)
