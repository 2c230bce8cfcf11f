"""Discovery against the real lab: signed, unsigned, bogus and unreachable DNS; real nginx."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import Lab
from oeagent import config as config_module
from oeagent.config import Config
from oeagent.discovery import (
    discover,
    installed_keys,
    read_peer_file,
    record_installed,
    refresh_due_peers,
)
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.lookup import Discoverer, Result
from oeagent.state import StateDir
from tests.integration import oe_peers
from tests.integration.oe_peers import ScratchCA, new_advert, publish_dns, unique, write_document

pytestmark = pytest.mark.lab
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def discovery_config(make_lab_config: Callable[..., Path], lab: Lab, ca: Path | None,
                     **extra: Any) -> Config:
    info = lab.info
    settings: dict[str, Any] = {
        "resolver": "127.0.0.1", "resolver_port": info.unbound_port, "dns_timeout": 1,
        "https_port": info.https_port, "https_timeout": 2, "min_cache": 60,
        **extra,
    }
    if ca is not None:
        settings["https_ca_bundle"] = str(ca)
    return config_module.load(make_lab_config({"discovery": settings}))


@pytest.fixture
def test_ca(tmp_path: Path) -> ScratchCA:
    return ScratchCA.create(tmp_path / "ca")


@pytest.fixture
def nginx(lab: Lab) -> Iterator[Callable[[Path, Path, Path], None]]:
    def start(chain: Path, key: Path, webroot: Path) -> None:
        lab.start_nginx(chain, key, webroot)

    yield start
    lab.stop_nginx()


def test_signed_advertisement_is_authenticated(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=30)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "authenticated", result.reasons
    assert result.source == "dns" and result.advertisement is not None
    assert result.advertisement.pins == ad.pins and result.advertisement.auth == "ecdsa"
    assert result.addresses == ("127.0.0.1",)
    assert result.txt_id == ad.id
    # DNS: cached for the TTL, raised to min_cache.
    assert result.expires == NOW + dt.timedelta(seconds=60)


def test_signed_zone_without_advertisement_is_none(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None)
    result = Discoverer(cfg.discovery).lookup(unique(), NOW)
    assert result.status == "none"
    assert "DNS: no _oe record (validated)" in result.reasons
    assert any("cannot connect" in r for r in result.reasons)  # nothing on the HTTPS port


def test_broken_signed_advertisement_is_invalid(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, tlsa=False)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "invalid"
    assert any("no TLSA 3 1 1 pin" in r for r in result.reasons)
    other, other_key = new_advert(unique())
    publish_dns(lab, other, other_key, ipseckey_from=key)  # the IPSECKEY's key is not pinned
    result = Discoverer(cfg.discovery).lookup(other.fqdn, NOW)
    assert result.status == "invalid" and any("matches a TLSA pin" in r for r in result.reasons), result.reasons


def test_unsigned_advertisement_is_not_trusted(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique("insecure.oe.test"))
    publish_dns(lab, ad, key, zone="insecure.oe.test")
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "none"
    assert "DNS: _oe record is not DNSSEC-signed; ignored" in result.reasons


def test_ad_bit_not_trusted_from_a_non_loopback_resolver() -> None:
    from oeagent.resolver import Resolver

    assert Resolver("127.0.0.53").ad_trusted and Resolver("::1").ad_trusted
    assert not Resolver("192.0.2.53").ad_trusted
    assert Resolver("192.0.2.53", trusted=True).ad_trusted


def test_bogus_and_unreachable(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None)
    bogus = Discoverer(cfg.discovery).lookup("host.bogus.oe.test", NOW)
    assert bogus.status == "bogus"
    assert any("DNSSEC validation failed (EDE" in r for r in bogus.reasons)
    started = time.monotonic()
    lame = Discoverer(cfg.discovery).lookup("host.lame.oe.test", NOW)
    assert lame.status == "unreachable" and any("timed out" in r for r in lame.reasons)
    assert time.monotonic() - started < 8


def test_https_document_from_an_enrolled_peer(
    lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path,
    nginx: Callable[[Path, Path, Path], None],
) -> None:
    """An unsigned delegation, a certificate oeagent enrolled from Pebble, nginx serving it."""
    from oeagent.enroll import enroll
    from oeagent.report import NullReporter

    fqdn = unique("insecure.oe.test")
    server = config_module.load(make_lab_config({"host.names": [fqdn]}, name="server.toml"))
    serial = enroll(server, NullReporter()).certificate["serial"]  # type: ignore[index]
    webroot = tmp_path / "www"
    ad, _ = new_advert(fqdn, max_age=600)
    write_document(webroot, ad, NOW + dt.timedelta(seconds=300))
    nginx(server.state_dir / "certs" / serial / "fullchain.pem",
          server.state_dir / "keys" / "current.pem", webroot)

    cfg = discovery_config(make_lab_config, lab, lab.info.pebble_root_pem)
    result = Discoverer(cfg.discovery).lookup(fqdn, NOW)
    assert result.status == "authenticated" and result.source == "https", result.reasons
    assert result.advertisement == ad
    assert result.expires == NOW + dt.timedelta(seconds=300)  # the document's expiry wins

    # Through the command path: persisted, and held through a missing document and a refused
    # connection until max_age; mode=none releases it.
    out = _discover_json(cfg, [fqdn], NOW)
    assert out["decision"] == "authenticated-enforce" and not out["held"]
    (webroot / ".well-known" / "oe-ipsec").unlink()
    later = NOW + dt.timedelta(seconds=60)
    out = _discover_json(cfg, [fqdn], later)
    assert out["status"] == "none" and out["held"] and out["decision"] == "authenticated-enforce"
    lab.stop_nginx()
    out = _discover_json(cfg, [fqdn], later)
    assert out["status"] == "none" and out["held"]
    assert any("cannot connect" in r for r in out["reasons"])
    # After the held advertisement expires, the peer is released.
    out = _discover_json(cfg, [fqdn], NOW + dt.timedelta(seconds=301))
    assert out["decision"] == "null-oe" and not out["held"]


def _discover_json(cfg: Config, peers: list[str], now: dt.datetime) -> dict[str, Any]:
    import io

    buffer = io.StringIO()
    discover(cfg, peers, as_json_lines=True, out=buffer, now=now)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return lines[0] if len(lines) == 1 else {"lines": lines}


def test_no_downgrade_through_dns(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1)
    assert _discover_json(cfg, [ad.fqdn], NOW)["decision"] == "authenticated-enforce"
    oe_peers.withdraw_dns(lab, ad.fqdn)
    out = _discover_json(cfg, [ad.fqdn], NOW + dt.timedelta(seconds=10))
    assert out["status"] == "none" and out["held"]
    # A bogus answer for a held peer does not release it either.
    state = StateDir(cfg.state_dir)
    cache = PeerCache(state)
    held = Result("host.bogus.oe.test", "host.bogus.oe.test", "authenticated", "dns", ad,
                  NOW + dt.timedelta(seconds=60), ("127.0.0.2",))  # not the other peer's
    cache.update(held, NOW)
    cache.save()
    out = _discover_json(cfg, ["host.bogus.oe.test"], NOW + dt.timedelta(seconds=10))
    assert out["status"] == "bogus" and out["held"] and out["decision"] == "authenticated-enforce"
    # mode=none, validly published, releases at once.
    released, _ = new_advert(ad.fqdn, mode="none")
    publish_dns(lab, released, None, ttl=1)
    out = _discover_json(cfg, [ad.fqdn], NOW + dt.timedelta(seconds=20))
    assert out["status"] == "none" and out["mode"] == "none" and out["decision"] == "null-oe"


def test_refresh_due_peers(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1)
    _discover_json(cfg, [ad.fqdn], NOW)
    # Discovered but not in any installed policy yet: that is a change to apply.
    assert refresh_due_peers(cfg, NOW + dt.timedelta(seconds=5)) is True
    record_installed(cfg, installed_keys(cfg, NOW + dt.timedelta(seconds=5)), None)
    assert refresh_due_peers(cfg, NOW + dt.timedelta(seconds=5)) is False  # not due yet
    testing, _ = new_advert(ad.fqdn, mode="testing")
    publish_dns(lab, dt_replace(testing, ad.pins), key, ttl=1)
    assert refresh_due_peers(cfg, NOW + dt.timedelta(seconds=50)) is True  # mode changed
    record_installed(cfg, installed_keys(cfg, NOW + dt.timedelta(seconds=50)), None)
    assert refresh_due_peers(cfg, NOW + dt.timedelta(seconds=51)) is False


def dt_replace(ad: Any, pins: tuple[str, ...]) -> Any:
    import dataclasses

    return dataclasses.replace(ad, pins=pins)


def test_bulk_from_file_json_lines(lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = discovery_config(make_lab_config, lab, None, https=False, concurrency=4)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key)
    listing = tmp_path / "peers.txt"
    listing.write_text(f"# peers\n{ad.fqdn}\n{unique()}\nhost.bogus.oe.test\n\nnot_a name\n{ad.fqdn}\n")
    peers = read_peer_file(listing)
    assert len(peers) == 4
    out = {line["peer"]: line for line in _discover_json(cfg, peers, NOW)["lines"]}  # as they finish
    assert [out[p]["status"] for p in peers] == ["authenticated", "none", "bogus", "invalid"]
    stored = json.loads((cfg.state_dir / "peers.json").read_text())
    # A refused name is reported but not kept: nothing holds it to anything.
    assert set(stored["peers"]) == set(peers) - {"not_a name"}


def test_hostile_https_documents_are_rejected_with_their_reason(
    lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path, test_ca: ScratchCA,
    nginx: Callable[[Path, Path, Path], None],
) -> None:
    fqdn = unique("insecure.oe.test")
    cfg = discovery_config(make_lab_config, lab, test_ca.root_pem)
    webroot = tmp_path / "www"
    ad, _ = new_advert(fqdn)
    good = ad.document(NOW + dt.timedelta(days=1))
    chain, key, _ = test_ca.issue(fqdn)

    def lookup() -> Result:
        return Discoverer(cfg.discovery).lookup(fqdn, NOW)

    def reject(body: bytes | None, reason: str) -> None:
        path = webroot / ".well-known" / "oe-ipsec"
        if body is None:  # a directory: nginx answers 301 to the slash-terminated URL
            if path.exists():
                path.unlink()
            path.mkdir(parents=True)
        else:
            write_document(webroot, ad, body=body)
        result = lookup()
        assert result.status == "invalid", (reason, result)
        assert any(reason in r for r in result.reasons), (reason, result.reasons)

    write_document(webroot, ad)
    nginx(chain, key, webroot)
    assert lookup().status == "authenticated"
    reject(None, "refusing to follow a redirect (301")
    reject(b"x" * (10 * 1024 * 1024), "over the 65536-byte limit")
    reject(b"{not json", "not valid JSON")
    reject(json.dumps({**good, "max_age": "3600"}).encode(), "'max_age' has the wrong type")
    reject(json.dumps({**good, "pins": "ab"}).encode(), "'pins' has the wrong type")
    reject(json.dumps({**good, "max_age": -1}).encode(), "max_age -1 is outside")
    reject(json.dumps({**good, "max_age": 10**12}).encode(), "is outside 60..31557600")
    reject(json.dumps({**good, "fqdn": "other.oe.test"}).encode(), "not for")

    other_chain, other_key, _ = test_ca.issue("other.oe.test")
    write_document(webroot, ad)
    nginx(other_chain, other_key, webroot)
    result = lookup()
    assert result.status == "invalid" and any("certificate rejected: Hostname mismatch" in r
                                              for r in result.reasons), result.reasons
    expired_chain, expired_key, _ = test_ca.issue(fqdn, expired=True)
    nginx(expired_chain, expired_key, webroot)
    result = lookup()
    assert result.status == "invalid" and any("certificate has expired" in r
                                              for r in result.reasons), result.reasons
    lab.stop_nginx()

    # Plain HTTP where HTTPS is expected: the TLS handshake fails.
    with _plain_http_server(json.dumps(good).encode()) as port:
        plain = discovery_config(make_lab_config, lab, test_ca.root_pem, https_port=port)
        result = Discoverer(plain.discovery).lookup(fqdn, NOW)
    assert result.status == "invalid" and any("TLS handshake failed" in r for r in result.reasons)
    # The system store does not know the test CA (verification is never switched off).
    system = discovery_config(make_lab_config, lab, None)
    nginx(chain, key, webroot)
    result = Discoverer(system.discovery).lookup(fqdn, NOW)
    assert any("certificate rejected" in r for r in result.reasons), result.reasons


@contextlib.contextmanager
def _plain_http_server(body: bytes) -> Iterator[int]:
    """Answer every connection on a loopback port with a plain-HTTP 200 and ``body``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


def test_cli_discover_from_file_and_policy_dry_run(lab: Lab, make_lab_config: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, address="192.0.2.44")  # a loopback peer would be skipped
    info = lab.info
    config = make_lab_config({"discovery": {
        "resolver_port": info.unbound_port, "dns_timeout": 1, "https": False}})
    listing = tmp_path / "peers.txt"
    listing.write_text(f"{ad.fqdn}\nhost.bogus.oe.test\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "oeagent", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=60, env=env, check=False)

    done = cli("discover", "--from-file", str(listing), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((x["peer"], x["status"]) for x in lines[:2]) == sorted([
        (ad.fqdn, "authenticated"), ("host.bogus.oe.test", "bogus")])
    assert lines[2]["command"] == "discover" and lines[2]["ok"] and lines[2]["peers"] == 2
    done = cli("policy", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"+\tright=192.0.2.44\n+\trightid=@{ad.fqdn}" in done.stdout and "+conn oeagent-private-or-clear" in done.stdout
    assert not (tmp_path / "ipsec.d" / "oeagent.conf").exists()
    assert cli("discover").returncode == 1  # no peer named


def test_rollover_records_from_the_publisher(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    """During a key rollover the publisher pins two keys and publishes two IPSECKEYs
    (precedence 10 current, 20 next): the current key comes first."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from oeagent import keys

    cfg = discovery_config(make_lab_config, lab, None, https=False)
    ad, key = new_advert(unique())
    nxt = ec.generate_private_key(ec.SECP256R1())
    publish_dns(lab, ad, key, next_key=nxt)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "authenticated", result.reasons
    assert result.advertisement is not None
    assert result.advertisement.pins == (keys.spki_sha256(key), keys.spki_sha256(nxt))
    assert result.advertisement.ike_ports == (500, 4500)


def test_document_cannot_claim_addresses_outside_its_dns_nor_take_a_signed_peers(
    lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path,
    nginx: Callable[[Path, Path, Path], None],
) -> None:
    """The review's attack: a name with a genuine certificate lists other hosts' addresses
    in its document. Only those its own A records give count, and an address a signed peer
    also claims stays the signed peer's."""
    import io

    from oeagent.enroll import enroll
    from oeagent.policy import model
    from oeagent.report import NullReporter

    evil = unique("insecure.oe.test")
    # Its own (unsigned) zone says 127.0.0.1, where nginx serves its document. The other
    # addresses are only strings in the document: nothing is ever sent to them.
    oe_peers._send(lab, "insecure.oe.test",
                   lambda u: u.replace(f"{evil}.", 60, "A", "127.0.0.1"))
    server = config_module.load(make_lab_config({"host.names": [evil]}, name="server.toml"))
    serial = enroll(server, NullReporter()).certificate["serial"]  # type: ignore[index]
    webroot = tmp_path / "www"
    ad, _ = new_advert(evil, max_age=600)
    ad = dataclasses.replace(ad, addresses=("198.51.100.7", "127.0.0.1", "203.0.113.7"))
    write_document(webroot, ad, NOW + dt.timedelta(seconds=300))
    nginx(server.state_dir / "certs" / serial / "fullchain.pem",
          server.state_dir / "keys" / "current.pem", webroot)
    cfg = discovery_config(make_lab_config, lab, lab.info.pebble_root_pem)

    result = Discoverer(cfg.discovery).lookup(evil, NOW)
    assert (result.status, result.source) == ("authenticated", "https"), result.reasons
    assert result.advertisement == ad and result.addresses == ("127.0.0.1",)
    assert result.notes == [
        f"HTTPS: {a} is in the document but not in {evil}'s A/AAAA records; dropped"
        for a in ("198.51.100.7", "203.0.113.7")]
    text = io.StringIO()
    discover(cfg, [evil], out=text, now=NOW)
    assert f"note: HTTPS: 198.51.100.7 is in the document but not in {evil}'s" in text.getvalue()

    # A signed peer at the same address, looked up in the same run: DNSSEC keeps it.
    bank_ad, bank_key = new_advert(unique())
    publish_dns(lab, bank_ad, bank_key, address="127.0.0.1")
    out = _discover_json(cfg, [evil, bank_ad.fqdn], NOW + dt.timedelta(seconds=10))
    [conflict] = [line for line in out["lines"] if "conflict" in line]
    assert conflict["conflict"] == {"address": "127.0.0.1", "kept": bank_ad.fqdn,
                                    "lost": [evil], "why": "stronger proof"}
    # The cache remembers the claims; the policy gives the address to the signed peer only.
    state = StateDir(cfg.state_dir)
    decisions = PeerCache(state).decisions(NOW + dt.timedelta(seconds=20))
    owners, conflicts = model.claims.resolve(model.peer_claims(decisions))
    assert owners["127.0.0.1"].name == bank_ad.fqdn and len(conflicts) == 1
    policy = model.build(null_ranges=[], clear=[], block=[], never_locked_out=[],
                         decisions=decisions, static_peers=[], responder=None)
    assert f"conflict: {conflicts[0].text()}" in policy.notes
    assert not any(evil in n and "cannot be an IPsec peer" in n for n in policy.notes)
