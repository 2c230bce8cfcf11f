"""Make lab peers: their DNS records (TSIG updates to the lab's BIND, built by the publisher's
own ``oeagent.publish.records``), their well-known documents, and a small test CA for hostile
HTTPS certificates."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import Lab
from oeagent import keys
from oeagent.advertisement import WELL_KNOWN_PATH, Advertisement
from oeagent.discovery import records
from oeagent.publish import records as publisher_records

NOW = dt.datetime.now(dt.UTC)


def unique(zone: str = "oe.test") -> str:
    return f"p{uuid.uuid4().hex[:10]}.{zone}"


def new_advert(fqdn: str, mode: str = "enforce", max_age: int = 3600) -> tuple[Advertisement, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return Advertisement(fqdn, "ecdsa", (keys.spki_sha256(key),), mode, max_age), key


def _send(lab: Lab, zone: str, build: object) -> None:
    update = lab.update_message(zone)
    build(update)  # type: ignore[operator]
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())


def publish_dns(lab: Lab, ad: Advertisement, key: ec.EllipticCurvePrivateKey | None,
                zone: str = "oe.test", ttl: int = 60, tlsa: bool = True,
                ipseckey: bool = True, address: str = "127.0.0.1",
                next_key: ec.EllipticCurvePrivateKey | None = None,
                ipseckey_from: ec.EllipticCurvePrivateKey | None = None) -> None:
    """Replace the peer's records with exactly what the publisher (oeagent.publish.records)
    puts out for ``ad`` -- minus TLSA or IPSECKEY when a test wants them broken."""
    owner = dns.name.from_text(f"{ad.fqdn}.")
    public = tuple(k.public_key() for k in (key, next_key) if k is not None)
    if ad.mode != "none" and next_key is not None:
        ad = dataclasses.replace(ad, pins=tuple(keys.spki_sha256(k) for k in public))
    rrsets = publisher_records.dns_rrsets(ad, public, ttl, reverse=False)
    if ipseckey_from is not None:  # a broken peer: the IPSECKEY is not one of the pinned keys
        rrsets[(owner, dns.rdatatype.IPSECKEY)] = dns.rrset.from_rdata(
            owner, ttl, ipseckey_rdata(ipseckey_from.public_key()))

    def build(update: object) -> None:
        u = update  # dns.update.UpdateMessage
        # A real name, not the wildcard: give it its address (lab services are on loopback).
        u.replace(owner, ttl, "A", address)  # type: ignore[attr-defined]
        for (_, rdtype), rrset in rrsets.items():
            if (rdtype == dns.rdatatype.TLSA and not tlsa) or (
                    rdtype == dns.rdatatype.IPSECKEY and not ipseckey):
                continue
            u.replace(rrset.name, rrset)  # type: ignore[attr-defined]

    _send(lab, zone, build)
    wanted = [(records.txt_name(ad.fqdn), "TXT")]
    if ad.mode != "none":
        wanted += [(records.tlsa_name(ad.fqdn, 500), "TLSA")] if tlsa else []
        wanted += [(owner, "IPSECKEY")] if ipseckey and key is not None else []
    wait_visible(lab, wanted)
    # Replaced records (and the wildcard's cached A): wait for the resolver's cache to turn over.
    deadline = time.monotonic() + 8
    while (ad.txt() not in str(lab.dig(str(records.txt_name(ad.fqdn)), "TXT", resolver=True).answer)
           or address not in str(lab.dig(str(owner), "A", resolver=True).answer)):
        assert time.monotonic() < deadline, "the new records are not visible in time"
        time.sleep(0.1)


def withdraw_dns(lab: Lab, fqdn: str, zone: str = "oe.test") -> None:
    def build(u: object) -> None:
        u.delete(records.txt_name(fqdn))  # type: ignore[attr-defined]
        for port in (500, 4500):
            u.delete(records.tlsa_name(fqdn, port))  # type: ignore[attr-defined]
        u.delete(dns.name.from_text(f"{fqdn}."), "IPSECKEY")  # type: ignore[attr-defined]

    _send(lab, zone, build)
    wait_gone(lab, records.txt_name(fqdn))


def wait_visible(lab: Lab, wanted: list[tuple[dns.name.Name, str]], timeout: float = 8) -> None:
    """Wait until the validating resolver sees every record: unbound may deny a new name from
    cached NSEC records (aggressive NSEC) for up to its cache-max-ttl."""
    deadline = time.monotonic() + timeout
    pending = list(wanted)
    while pending and time.monotonic() < deadline:
        pending = [(n, t) for n, t in pending if not lab.dig(str(n), t, resolver=True).answer]
        if pending:
            time.sleep(0.1)
    assert not pending, f"not visible through the resolver in time: {pending}"


def wait_gone(lab: Lab, name: dns.name.Name, timeout: float = 8) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lab.dig(str(name), "TXT", resolver=True).answer:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} still served")


def write_document(webroot: Path, ad: Advertisement, expires: dt.datetime | None = None,
                   body: bytes | None = None) -> Path:
    path = webroot / WELL_KNOWN_PATH.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        path.rmdir()
    path.write_bytes(body if body is not None else ad.document_bytes(expires or NOW + dt.timedelta(days=1)))
    return path


@dataclass
class ScratchCA:
    """A throwaway CA for certificates nginx serves in hostile-HTTPS tests."""

    dir: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path) -> ScratchCA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oe5 test root")])
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        (directory / "root.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, key, cert)

    @property
    def root_pem(self) -> Path:
        return self.dir / "root.pem"

    def issue(self, name: str, *, expired: bool = False,
              key: ec.EllipticCurvePrivateKey | None = None) -> tuple[Path, Path, x509.Certificate]:
        leaf_key = key or ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (
            now - dt.timedelta(hours=1), now + dt.timedelta(days=30))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = f"{name}{'-expired' if expired else ''}"
        chain = self.dir / f"{stem}.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                          + self.cert.public_bytes(serialization.Encoding.PEM))
        key_path = self.dir / f"{stem}.key"
        key_path.write_bytes(keys.key_to_pem(leaf_key))
        key_path.chmod(0o600)
        return chain, key_path, cert


def ipseckey_rdata(public: keys.PublicKey) -> dns.rdata.Rdata:
    """An IPSECKEY as the publisher builds it (current key, precedence 10)."""
    algorithm, blob = publisher_records.ipseckey_algorithm_and_key(public)
    return dns.rdata.from_text("IN", "IPSECKEY", f"10 0 {algorithm} . {base64.b64encode(blob).decode()}")
