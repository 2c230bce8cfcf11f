"""Issued certificates kept in the state directory, and which one is current.

Every issued certificate is kept under ``certs/<serial>/`` (never overwritten), and
``current.json`` names the current one. Writing the files first and the pointer last means an
interruption leaves the previous certificate current: nothing is lost, a rerun converges.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from oeagent.errors import StateError
from oeagent.state import StateDir


@dataclass(frozen=True)
class StoredCertificate:
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def fingerprint_sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def dns_names(self) -> list[str]:
        return sorted(str(name) for name in _san(self.cert, x509.DNSName))

    def ip_addresses(self) -> list[str]:
        return sorted(str(ip) for ip in _san(self.cert, x509.IPAddress))

    def summary(self) -> dict[str, object]:
        return {
            "serial": self.serial_hex,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "names": self.dns_names(),
            "addresses": self.ip_addresses(),
            "fingerprint_sha256": self.fingerprint_sha256,
        }


def _san(cert: x509.Certificate, kind: type) -> list[object]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(kind))


def _pem(certs: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def save(
    state: StateDir, cert: x509.Certificate, chain: tuple[x509.Certificate, ...]
) -> StoredCertificate:
    """Keep an issued certificate and make it current (pointer written last)."""
    stored = StoredCertificate(cert, chain)
    directory = state.cert_dir(stored.serial_hex)
    state.write_bytes(directory / "cert.pem", _pem([cert]))
    state.write_bytes(directory / "chain.pem", _pem(chain))
    state.write_bytes(directory / "fullchain.pem", _pem([cert, *chain]))
    state.write_json(state.current_path, {"serial": stored.serial_hex, **stored.summary()})
    return stored


def load_current(state: StateDir) -> StoredCertificate | None:
    pointer = state.read_json(state.current_path)
    if pointer is None:
        return None
    serial = pointer.get("serial")
    if not isinstance(serial, str) or not serial.isalnum():
        raise StateError(f"{state.current_path} names no valid serial")
    directory = state.cert_dir(serial)
    cert_pem = state.read_bytes(directory / "cert.pem")
    chain_pem = state.read_bytes(directory / "chain.pem")
    if cert_pem is None or chain_pem is None:
        raise StateError(
            f"{state.current_path} names certificate {serial}, but {directory} is incomplete"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem.strip() else ()
    except ValueError as exc:
        raise StateError(f"cannot read certificate {serial} in {directory}: {exc}") from None
    return StoredCertificate(cert, chain)
