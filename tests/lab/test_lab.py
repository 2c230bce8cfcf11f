"""The lab itself works: signed zone, validating resolver, TSIG updates, Pebble, clean stop."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab import Lab
from lab.procs import is_running
from oeagent import config

pytestmark = pytest.mark.lab


def _txt_name(lab: Lab) -> str:
    return f"t-{uuid.uuid4().hex[:12]}.{lab.info.zone}."


def test_zone_is_signed_and_unbound_validates(lab: Lab) -> None:
    soa = lab.dig(lab.info.zone, "SOA")
    assert soa.flags & dns.flags.AA
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in soa.answer)

    secure = lab.dig("server.oe.test", "A", resolver=True)
    assert secure.rcode() == dns.rcode.NOERROR
    assert secure.flags & dns.flags.AD
    assert str(secure.answer[0][0]) == "127.0.0.1"

    # Any invented name resolves (wildcard), still validated.
    invented = lab.dig("anything-at-all.oe.test", "A", resolver=True)
    assert invented.flags & dns.flags.AD and str(invented.answer[0][0]) == "127.0.0.1"

    insecure = lab.dig("www.plain.test", "A", resolver=True)
    assert insecure.rcode() == dns.rcode.NOERROR
    assert not insecure.flags & dns.flags.AD


def test_resolver_never_leaves_the_lab(lab: Lab) -> None:
    # The root is stubbed to the lab's BIND, which refuses: no query goes off the machine.
    reply = lab.dig("example.com", "A", resolver=True)
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_tsig_update_accepted(lab: Lab) -> None:
    name = _txt_name(lab)
    update = lab.update_message()
    update.replace(name, 5, "TXT", '"hello"')
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR
    # Inline signing serves the new record a few ms after the update.
    deadline = time.monotonic() + 5
    while not (answer := lab.dig(name, "TXT")).answer and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(r.rdtype == dns.rdatatype.TXT for r in answer.answer)
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in answer.answer)


def test_tsig_update_with_wrong_key_refused(lab: Lab) -> None:
    name = _txt_name(lab)
    update = lab.update_message(secret_b64="d3JvbmcgZ3Vlc3Mgd3JvbmcgZ3Vlc3Mgd3Jvbmcga2V5")
    update.replace(name, 5, "TXT", '"nope"')
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert not lab.dig(name, "TXT").answer


def test_pebble_directory_needs_the_ca_bundle(lab: Lab) -> None:
    info = lab.info
    with requests.Session() as session:
        session.trust_env = False
        directory = session.get(info.acme_directory, verify=str(info.https_ca_pem), timeout=5)
        assert directory.status_code == 200 and "newOrder" in directory.json()
        with pytest.raises(requests.exceptions.SSLError):
            session.get(info.acme_directory, verify=True, timeout=5)
    root = x509.load_pem_x509_certificate(lab.pebble_root_pem().encode())
    assert root.subject == root.issuer
    pem = root.public_bytes(serialization.Encoding.PEM).decode()
    assert info.pebble_root_pem.read_text() == pem


def test_lab_config_loads(lab: Lab, lab_config_path: Path, tmp_path: Path) -> None:
    loaded = config.load(lab_config_path)
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.acme.directory == lab.info.acme_directory
    assert loaded.challenge.http.port == lab.info.http_port
    assert loaded.challenge.dns.tsig_secret is not None
    assert loaded.nss.directory == tmp_path / "nss"
    assert config.load(lab.info.config_path).state_dir == lab.dir / "state"


def test_config_overrides(make_lab_config: Callable[..., Path]) -> None:
    path = make_lab_config(
        {"host.names": ["www.oe.test", "alt.oe.test"], "challenge": {"type": "dns-01"},
         "acme.email": None}
    )
    loaded = config.load(path)
    assert loaded.host.names == ("www.oe.test", "alt.oe.test")
    assert loaded.challenge.type == "dns-01"
    assert loaded.acme.email is None


def test_second_lab_up_and_down_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    other = Lab(tmp_path / "other")
    started = time.monotonic()
    info = other.up()
    up_seconds = time.monotonic() - started
    try:
        assert info.bind_port != lab.info.bind_port
        assert info.acme_directory != lab.info.acme_directory
        status = other.status()
        assert all(status.values()) and set(status) == {"named", "pebble", "unbound"}
        old_root = info.pebble_root_pem.read_text()
        restarted = other.restart_pebble(cert_validity_seconds=600)
        assert restarted.cert_validity_seconds == 600 == other.info.cert_validity_seconds
        assert restarted.pebble_root_pem.read_text() != old_root  # a new root on every start
        _, daemons = other._load()
    finally:
        started = time.monotonic()
        other.down()
    down_seconds = time.monotonic() - started
    assert not any(is_running(d) for d in daemons.values())
    assert other.status() == {}
    for d in daemons.values():
        assert not Path(f"/proc/{d.pid}").exists() or not is_running(d)
    assert up_seconds < 15 and down_seconds < 10
    # The shared lab is untouched.
    assert all(lab.status().values())


def test_delegations_insecure_bogus_and_lame(lab: Lab) -> None:
    """The discovery tests need an insecure, a bogus and an unreachable delegation."""
    secure = lab.dig("server.oe.test", "A", resolver=True)
    assert secure.rcode() == dns.rcode.NOERROR and secure.flags & dns.flags.AD
    insecure = lab.dig("host.insecure.oe.test", "A", resolver=True)
    assert insecure.rcode() == dns.rcode.NOERROR and not insecure.flags & dns.flags.AD
    assert insecure.answer
    bogus = lab.dig("host.bogus.oe.test", "A", resolver=True)
    assert bogus.rcode() == dns.rcode.SERVFAIL
    # EDE 9 (DNSKEY missing for the DS) on first contact; once unbound has marked the zone's
    # key bad (any earlier test in the session may have asked), EDE 6 (DNSSEC bogus).
    assert [e.code for e in bogus.extended_errors()] in ([9], [6])


def https_get(port: int, server_name: str, path: str, cafile: Path) -> tuple[int, str, bytes]:
    """GET over real TLS to 127.0.0.1:port, validating the certificate for ``server_name``."""
    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname=server_name) as tls:
        tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {server_name}\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body


def test_nginx_serves_the_webroot_over_https_with_an_oeagent_certificate(
    lab: Lab, lab_config_path: Path, tmp_path: Path
) -> None:
    from oeagent import config as config_module
    from oeagent.enroll import enroll
    from oeagent.report import NullReporter

    cfg = config_module.load(lab_config_path)
    serial = enroll(cfg, NullReporter()).certificate["serial"]  # type: ignore[index]
    webroot = tmp_path / "www"
    (webroot / ".well-known").mkdir(parents=True)
    (webroot / ".well-known" / "oe-ipsec").write_text('{"hello": 1}')
    port = lab.start_nginx(cfg.state_dir / "certs" / serial / "fullchain.pem",
                           cfg.state_dir / "keys" / "current.pem", webroot)
    try:
        status, ctype, body = https_get(port, "server.oe.test", "/.well-known/oe-ipsec",
                                        lab.info.pebble_root_pem)
        assert (status, ctype, json.loads(body)) == (200, "application/json", {"hello": 1})
        # The same server is refused for a name its certificate does not carry.
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(port, "www.oe.test", "/.well-known/oe-ipsec", lab.info.pebble_root_pem)
    finally:
        lab.stop_nginx()
    assert "nginx" not in lab.status()


def test_eab_lab_requires_binding_and_its_config_enrolls(tmp_path: Path) -> None:
    """``Lab(eab=True)`` (``python -m lab up --eab``): Pebble requires External Account
    Binding, the key file is private, the lab's oeagent.toml binds with it, and Pebble
    keeps requiring it across a restart."""
    eab_lab = Lab(tmp_path / "eab", eab=True)
    info = eab_lab.up()
    try:
        assert info.eab_kid and info.eab_key_file is not None
        assert info.eab_key_file.stat().st_mode & 0o077 == 0
        assert Lab(tmp_path / "eab").info.eab_key_file == info.eab_key_file  # from lab.json
        eab_lab.restart_pebble()
        with requests.Session() as session:
            session.trust_env = False
            meta = session.get(info.acme_directory, verify=str(info.https_ca_pem),
                               timeout=5).json()["meta"]
        assert meta["externalAccountRequired"] is True
        proc = subprocess.run(
            [sys.executable, "-m", "oeagent", "--config", str(info.config_path), "--json",
             "enroll"], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        key = info.eab_key_file.read_text().strip()
        assert key not in proc.stdout + proc.stderr
    finally:
        eab_lab.down()
