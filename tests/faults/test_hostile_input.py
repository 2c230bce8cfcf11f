"""Hostile input that earlier tests did not cover: names at discover's entry (refused before
any DNS query), malformed record data, and HTTPS bodies that drip, bomb or nest, served by
a real TLS server on loopback."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from lab import tlsca
from oeagent.advertisement import AdvertisementError, parse_document, parse_txt
from oeagent.config import DiscoveryConfig
from oeagent.discovery import lookup as lookup_module
from oeagent.discovery import records, wellknown
from tests.faults.harness import fault

NOW = dt.datetime.now(dt.UTC)

HOSTILE_NAMES = [
    "a..example.org", "a.example.org;reboot", "$(id).example.org", "`id`.example.org",
    "a.example.org/../../etc/passwd", "a\\b.example.org", "a.example.org\x00.evil",
    "x" * 64 + ".example.org", ("a" * 63 + ".") * 4 + "org", "-rf.example.org",
    "a b.example.org", "a\n.example.org", "xn--.example.org", "ex\u0430mple.org|cat",
]


@fault("hostile peer names (metacharacters, separators, NUL, overlong, `..`)", "discover",
       "classified invalid before any DNS query, file or command uses them",
       cases=len(HOSTILE_NAMES))
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_peer_names_never_reach_dns(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_query(*args: object) -> None:
        raise AssertionError(f"queried DNS for {args[1:]!r}")

    monkeypatch.setattr(lookup_module, "query", no_query)
    result = lookup_module.Discoverer(DiscoveryConfig()).lookup(name, NOW)
    assert result.status == "invalid" and "not a name or address" in result.reasons[0]


def _ipseckey(text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.IPSECKEY, text)


KEY64 = base64.b64encode(bytes(range(64))).decode()
SHORT_RSA = base64.b64encode(bytes([1, 3]) + bytes(10)).decode()
MALFORMED_RDATA = [
    (f"10 0 1 . {KEY64}", "algorithm 1 is not 2 or 3"),  # DSA
    (f"10 0 4 . {KEY64}", "algorithm 4 is not 2 or 3"),
    (f"10 1 3 192.0.2.1 {KEY64}", "names a gateway"),
    (f"10 0 3 . {base64.b64encode(bytes(63)).decode()}", "not 64 bytes"),
    (f"10 0 3 . {base64.b64encode(bytes(65)).decode()}", "not 64 bytes"),
    (f"10 0 3 . {base64.b64encode(bytes(64)).decode()}", "does not decode"),  # not on the curve
    (f"10 0 2 . {SHORT_RSA}", "RSA key is malformed"),
]


@fault("malformed IPSECKEY RDATA (wrong algorithm numbers, gateways, truncated keys)",
       "discover", "each refused with its reason", cases=len(MALFORMED_RDATA))
@pytest.mark.parametrize(("text", "says"), MALFORMED_RDATA)
def test_malformed_ipseckey_is_refused(text: str, says: str) -> None:
    with pytest.raises(AdvertisementError, match=says):
        records.ipseckey_public(_ipseckey(text))  # type: ignore[arg-type]


def test_tlsa_other_than_3_1_1_or_truncated_is_ignored() -> None:
    # (dnspython itself refuses a 3 1 1 whose digest is not 32 bytes.)
    for text in ("2 0 1 " + "ab" * 32,
                 "3 0 1 " + "ab" * 32, "3 1 2 " + "ab" * 64):
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
        assert records.tlsa_pin(rdata) is None  # type: ignore[arg-type]


@fault("oversized, repeated or malformed _oe TXT", "discover", "refused with its reason",
       cases=4)
def test_hostile_txt_signals() -> None:
    good = "v=OE1; id=0123456789abcdef; mode=enforce"
    for text, says in [(good + "; x=" + "a" * 300, "longer than 255"),
                       (good + "; mode=none", "repeats 'mode'"),
                       ("v=OE1; id=0123456789abcdef; mode=enforce; junk", "malformed field"),
                       ("v=OE1; id=../../etc; mode=enforce", "no valid id")]:
        with pytest.raises(AdvertisementError, match=says):
            parse_txt(text)


# ---- HTTPS bodies from a real TLS server ------------------------------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    tlsca.make_https_identity(d / "ca.pem", d / "cert.pem", d / "key.pem")
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


@contextlib.contextmanager
def https_server(tls: tuple[Path, Path, Path],
                 respond: Callable[[ssl.SSLSocket], None]) -> Iterator[int]:
    _, cert, key = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(4096)
                respond(tls_conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)


def fetch(tls: tuple[Path, Path, Path], respond: Callable[[ssl.SSLSocket], None],
          timeout: float = 1.0) -> wellknown.Fetched:
    with https_server(tls, respond) as port:
        return wellknown.fetch("127.0.0.1", "127.0.0.1", port=port,
                               context=wellknown.tls_context(tls[0]), timeout=timeout)


def answer(body: bytes, headers: str = "") -> Callable[[ssl.SSLSocket], None]:
    def respond(conn: ssl.SSLSocket) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}"
                     "Connection: close\r\n\r\n".encode() + body)
    return respond


def dripping(head: bytes, byte: bytes, count: int) -> Callable[[ssl.SSLSocket], None]:
    """A server that sends ``head``, then ``byte`` every 50 ms, ``count`` times."""
    def respond(conn: ssl.SSLSocket) -> None:
        conn.sendall(head)
        with contextlib.suppress(OSError):
            for _ in range(count):
                conn.sendall(byte)
                time.sleep(0.05)
    return respond


@fault("slow-drip HTTPS body (one byte every 50 ms)", "discover",
       "given up after twice discovery.https_timeout: 'too slow'")
def test_slow_drip_body(tls: tuple[Path, Path, Path]) -> None:
    began = time.monotonic()
    fetched = fetch(tls, dripping(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
                                  b" ", 5000), timeout=0.5)
    assert fetched.body is None and "too slow" in fetched.reason, fetched
    assert time.monotonic() - began < 3


@fault("slow-drip HTTPS headers (one byte every 50 ms)", "discover",
       "no read outlasts twice discovery.https_timeout: 'too slow'")
def test_slow_drip_headers(tls: tuple[Path, Path, Path]) -> None:
    # Each byte comes well inside the per-read timeout, so only a deadline on the whole
    # exchange ends it: http.client would otherwise read 100 header lines of 64 KiB each.
    began = time.monotonic()
    fetched = fetch(tls, dripping(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 400), timeout=0.5)
    assert fetched.body is None and "too slow" in fetched.reason, fetched
    assert time.monotonic() - began < 5, "the header drip held the fetch past its deadline"


@fault("slow-drip TLS handshake (one byte every 50 ms)", "discover",
       "the handshake as a whole is bounded by discovery.https_timeout: 'timed out'")
def test_slow_drip_tls_handshake(tls: tuple[Path, Path, Path]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def drip_garbage() -> None:
        # A TLS record header promising a long ServerHello, then its bytes one at a time.
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"\x16\x03\x03\x40\x00")
                while not stop.wait(0.05):
                    conn.sendall(b"\x00")

    thread = threading.Thread(target=drip_garbage, daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        fetched = wellknown.fetch("127.0.0.1", "127.0.0.1", port=listener.getsockname()[1],
                                  context=wellknown.tls_context(tls[0]), timeout=0.5)
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)
    assert fetched.body is None, fetched
    assert "timed out" in fetched.reason or "too slow" in fetched.reason, fetched
    assert time.monotonic() - began < 5, "the handshake drip held the fetch past its deadline"


@fault("endless chunked HTTPS body", "discover", "cut at 64 KiB: 'over the limit'")
def test_endless_chunked_body(tls: tuple[Path, Path, Path]) -> None:
    def endless(conn: ssl.SSLSocket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(100):
                conn.sendall(b"4000\r\n" + b"{" * 0x4000 + b"\r\n")

    fetched = fetch(tls, endless)
    assert fetched.body is None and "over the 65536-byte limit" in fetched.reason, fetched


@fault("compression bomb (gzip of 10 MB served as Content-Encoding: gzip)", "discover",
       "never inflated (no Accept-Encoding, no decoding): refused as not UTF-8")
def test_gzip_bomb_is_not_inflated(tls: tuple[Path, Path, Path]) -> None:
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")
    fetched = fetch(tls, answer(bomb, "Content-Encoding: gzip\r\n"))
    assert fetched.body == bomb  # the bytes as sent, 10 KB, not 10 MB
    with pytest.raises(AdvertisementError, match=r"not UTF-8|not valid JSON"):
        parse_document(fetched.body, "127.0.0.1", NOW)


@fault("duplicate JSON keys and deep nesting over HTTPS", "discover",
       "refused by the strict parser with the reason", cases=2)
def test_duplicate_keys_and_deep_nesting_over_https(tls: tuple[Path, Path, Path]) -> None:
    for body, says in [(b'{"version": "OE1", "version": "OE1"}', "repeats the key"),
                       (b"[" * 40_000 + b"]" * 40_000, "over the 65536-byte limit"),
                       (b"[" * 30_000 + b"]" * 30_000, "nested too deeply")]:
        fetched = fetch(tls, answer(body))
        if fetched.body is None:
            assert says in fetched.reason
            continue
        with pytest.raises(AdvertisementError, match=says):
            parse_document(fetched.body, "server.oe.test", NOW)


@fault("a trailing newline in names, nicknames, tokens, pins, ids and policy values", "all",
       "refused: every validating regex must match the whole string ('$' also matches "
       "before a final newline)", cases=5)
def test_trailing_newline_is_refused_everywhere() -> None:
    import json

    from oeagent import names
    from oeagent.advertisement import Advertisement
    from oeagent.ca.http01 import check_token
    from oeagent.errors import ChallengeError
    from oeagent.policy import model, render

    with pytest.raises(ValueError):
        names.normalize_fqdn("host.example.org\n")
    with pytest.raises(ValueError):
        names.check_nickname("oeagent\n")
    with pytest.raises(ChallengeError):
        check_token("abc\n")
    bad = model.PeerConn("oeagent-peer-x", "x.example.org\n", "192.0.2.1", "ecdsa", "enforce",
                         "config")
    with pytest.raises(ValueError, match="refusing to render"):
        render.render(model.Policy(groups={g: [] for g in model.GROUPS}, peers=[bad]), NOW)
    good = Advertisement("server.oe.test", "ecdsa", ("ab" * 32,), mode="enforce", max_age=300)
    document = good.document(NOW + dt.timedelta(days=1))
    document["pins"] = ["ab" * 32 + "\n"]
    with pytest.raises(AdvertisementError):
        parse_document(json.dumps(document).encode(), "server.oe.test", NOW)


@fault("slow-drip body while publish verifies its document", "publish --verify",
       "bounded by twice the fetch timeout as a whole ('too slow', reported as 'cannot fetch')")
def test_publish_fetch_slow_drip_is_bounded(tls: tuple[Path, Path, Path]) -> None:
    from oeagent import wellknown_fetch

    drip = dripping(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", b" ", 5000)
    began = time.monotonic()
    with (https_server(tls, drip) as port,
          pytest.raises(wellknown_fetch.FetchError, match="too slow")):
        wellknown_fetch.get("127.0.0.1", "127.0.0.1", port=port,
                            context=wellknown_fetch.tls_context(tls[0]), timeout=0.5)
    assert time.monotonic() - began < 3
