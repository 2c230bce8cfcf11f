"""Trust anchors pluto needs in its NSS database to accept peers' certificates.

``letsencrypt`` means ISRG Root X1 and X2, shipped as package data and checked against their
published SHA-256 fingerprints at load time, so a damaged install cannot slip in another root.
Anything else is a PEM bundle the operator chose (the lab uses Pebble's root).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from oeagent.errors import ConfigError, OeagentError

LETSENCRYPT_FINGERPRINTS = {
    # ISRG Root X1 (RSA 4096), valid to 2035-06-04
    "96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6",
    # ISRG Root X2 (ECDSA P-384), valid to 2040-09-17
    "69729b8e15a86efc177a57afb7171dfc64add28c2fca8cf1507e34453ccb1470",
}


def load_anchors(setting: str) -> list[x509.Certificate]:
    if setting == "letsencrypt":
        data = resources.files("oeagent").joinpath("data/letsencrypt-roots.pem").read_bytes()
        certs = x509.load_pem_x509_certificates(data)
        found = {c.fingerprint(hashes.SHA256()).hex() for c in certs}
        if found != LETSENCRYPT_FINGERPRINTS:
            raise OeagentError("the shipped Let's Encrypt roots do not match their fingerprints")
        return certs
    path = Path(setting)
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"nss.trust_anchors: cannot load PEM bundle {path}: {exc}"]) from None
    return certs
