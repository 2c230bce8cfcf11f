"""The HTTPS fallback: fetch ``https://<name>/.well-known/oe-ipsec`` and nothing else.

The name is resolved through the configured resolver (not the system's: a host's idea of a
name must be the one discovery checked), then oeagent connects to that address with TLS,
SNI and hostname verification for the peer's name against the configured roots. Like MTA-STS:
no redirects, status 200 only, a size cap, short timeouts; the body goes to the strict
parser in ``oeagent.advertisement``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from oeagent.advertisement import MAX_DOCUMENT_BYTES, WELL_KNOWN_PATH


@dataclass(frozen=True)
class Fetched:
    """What one GET gave: a body, or why there is none (``absent``: nothing is published)."""

    body: bytes | None
    reason: str = ""
    absent: bool = False
    """True when the server is simply not publishing (no connection, 404): not hostile."""


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def fetch(
    name: str, address: str, *, port: int, context: ssl.SSLContext, timeout: float
) -> Fetched:
    """GET the well-known document of ``name`` from ``address``; never raises for network errors."""
    deadline = time.monotonic() + 2 * timeout  # bounds a server that trickles bytes
    where = f"https://{name}{'' if port == 443 else f':{port}'}{WELL_KNOWN_PATH}"
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except TimeoutError:
        return Fetched(None, f"{where}: connection to {address} timed out", absent=True)
    except OSError as exc:
        return Fetched(None, f"{where}: cannot connect to {address}: {exc.strerror or exc}",
                       absent=True)
    try:
        try:
            tls = context.wrap_socket(raw, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            return Fetched(None, f"{where}: certificate rejected: {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            return Fetched(None, f"{where}: TLS handshake failed: {exc}")
        conn = http.client.HTTPSConnection(name, port, timeout=timeout, context=context)
        conn.sock = tls  # already connected and verified for ``name``
        try:
            return _get(conn, where, deadline)
        finally:
            conn.close()
    except TimeoutError:
        return Fetched(None, f"{where}: timed out")
    except (OSError, http.client.HTTPException) as exc:
        return Fetched(None, f"{where}: HTTP failed: {type(exc).__name__}: {exc}")
    finally:
        raw.close()


def _get(conn: http.client.HTTPSConnection, where: str, deadline: float) -> Fetched:
    conn.putrequest("GET", WELL_KNOWN_PATH, skip_accept_encoding=True)
    conn.putheader("Accept", "application/json")
    conn.putheader("User-Agent", "oeagent")
    conn.putheader("Connection", "close")
    conn.endheaders()
    response = conn.getresponse()
    status = response.status
    if 300 <= status < 400:
        location = response.getheader("Location", "?")[:200]
        return Fetched(None, f"{where}: refusing to follow a redirect ({status} to {location})")
    if status in (404, 410):
        return Fetched(None, f"{where}: not published (HTTP {status})", absent=True)
    if status != 200:
        return Fetched(None, f"{where}: HTTP {status}, only 200 is accepted")
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
        return Fetched(None, f"{where}: document of {length} bytes is over the "
                             f"{MAX_DOCUMENT_BYTES}-byte limit")
    body = b""
    while len(body) <= MAX_DOCUMENT_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return Fetched(None, f"{where}: the server is too slow sending the document")
        # read1: what one recv gives. read(n) waits for all n bytes (or the Content-Length),
        # so a server dripping a byte at a time held the fetch for minutes past the deadline.
        if conn.sock is not None:
            conn.sock.settimeout(min(left, conn.timeout or left))
        try:
            chunk = response.read1(16384)
        except TimeoutError:
            return Fetched(None, f"{where}: the server is too slow sending the document")
        if not chunk:
            return Fetched(body)
        body += chunk
    return Fetched(None, f"{where}: document is over the {MAX_DOCUMENT_BYTES}-byte limit")
