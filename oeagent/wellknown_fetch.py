"""GET ``https://<fqdn>/.well-known/oe-ipsec`` the way a careful client does: one rule set for
discovery (is this peer advertising?) and publishing (do clients see what we published?).

The caller resolves the name through its validating resolver (not the system's) and passes
the address: oeagent connects there with TLS 1.2+, SNI and hostname verification for the
fqdn against the configured roots (verification is never switched off). Like MTA-STS:
redirects are never followed, the body is read only for a 200, at most 64 KiB of it, with
short timeouts per connect/read and one overall deadline against servers that trickle bytes.
Nothing is decoded (no Accept-Encoding), so a compression bomb stays its size on the wire.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oeagent.advertisement import MAX_DOCUMENT_BYTES, WELL_KNOWN_PATH


class FetchError(Exception):
    """No answer to judge: connection, TLS, HTTP, size or time failed; ``str()`` says which."""

    def __init__(self, reason: str, *, absent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.absent = absent
        """True when the host is simply not there (no connection): not hostile."""


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    location: str
    """A redirect's target as sent (cut to 200 characters), for the reason; never followed."""
    body: bytes
    """The document, read only for status 200 (empty otherwise)."""

    def refusal(self) -> tuple[str, bool] | None:
        """Why this is not a document under the rules, and whether that means "not
        published" (404/410); None for a 200."""
        if 300 <= self.status < 400:
            return f"refusing to follow a redirect ({self.status} to {self.location})", False
        if self.status in (404, 410):
            return f"not published (HTTP {self.status})", True
        if self.status != 200:
            return f"HTTP {self.status}, only 200 is accepted", False
        return None


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """PKIX against ``ca_bundle`` (default: the system store), TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def url(fqdn: str, port: int) -> str:
    return f"https://{fqdn}{'' if port == 443 else f':{port}'}{WELL_KNOWN_PATH}"


def get(fqdn: str, address: str, *, port: int, context: ssl.SSLContext, timeout: float,
        total: float | None = None) -> Response:
    """GET the well-known document of ``fqdn`` from ``address``.

    ``timeout`` bounds each connect and read; ``total`` (default twice ``timeout``) the whole
    exchange, so a server dripping a byte at a time cannot hold it. Raises FetchError.
    """
    deadline = time.monotonic() + (2 * timeout if total is None else total)
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except TimeoutError:
        raise FetchError(f"connection to {address} timed out", absent=True) from None
    except OSError as exc:
        raise FetchError(f"cannot connect to {address}: {exc.strerror or exc}",
                         absent=True) from None
    total_seconds = deadline - time.monotonic()
    too_slow = (f"the server is too slow sending the document: no complete answer within "
                f"{total_seconds:.1f} s")
    cut = _Deadline(raw)
    with cut.running(total_seconds) as expired:
        try:
            try:
                # Handshake after the cut watches the TLS socket, which took over raw's.
                tls = context.wrap_socket(raw, server_hostname=fqdn,
                                          do_handshake_on_connect=False)
                cut.watch(tls)
                tls.do_handshake()
            except ssl.SSLCertVerificationError as exc:
                raise FetchError(f"certificate rejected: {exc.verify_message}") from None
            except (ssl.SSLError, OSError) as exc:
                raise FetchError(f"TLS handshake failed: {exc}") from None
            conn = http.client.HTTPSConnection(fqdn, port, timeout=timeout, context=context)
            conn.sock = tls  # already connected and verified for ``fqdn``
            try:
                response = _exchange(conn, deadline)
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, FetchError) as exc:
            if expired.is_set():
                raise FetchError(too_slow) from None
            if isinstance(exc, FetchError):
                raise
            if isinstance(exc, TimeoutError):
                raise FetchError("timed out") from None
            raise FetchError(f"HTTP failed: {type(exc).__name__}: {exc}") from None
        finally:
            cut.close()
        if expired.is_set():
            # The cut reads as an end of file: what arrived before it may be a truncated body.
            raise FetchError(too_slow)
        return response


class _Deadline:
    """Shuts the watched socket down when the deadline passes, whatever is reading from it.

    Per-read timeouts alone let a server that trickles the TLS handshake, the status line or
    the headers (http.client reads up to 100 header lines of 64 KiB each) hold a fetch for
    hours, a byte just inside each timeout. Shutting the socket down makes the blocked read
    return at once; ``expired`` tells the caller that this, not the server, ended it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._sock = sock

    def watch(self, sock: socket.socket) -> None:
        """Watch ``sock`` from now on: wrapping a socket in TLS detaches the plain one."""
        with self._lock:
            self._sock = sock

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the watched socket (the plain one is detached once TLS took it over)."""
        with self._lock:
            self._sock.close()

    @contextlib.contextmanager
    def running(self, seconds: float) -> Iterator[threading.Event]:
        timer = threading.Timer(max(seconds, 0.0), self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield self.expired
        finally:
            timer.cancel()


def _exchange(conn: http.client.HTTPSConnection, deadline: float) -> Response:
    conn.putrequest("GET", WELL_KNOWN_PATH, skip_accept_encoding=True)
    conn.putheader("Accept", "application/json")
    conn.putheader("User-Agent", "oeagent")
    conn.putheader("Connection", "close")
    conn.endheaders()
    response = conn.getresponse()
    status = response.status
    content_type = response.getheader("Content-Type", "")
    location = response.getheader("Location", "?")[:200]
    if status != 200:
        return Response(status, content_type, location, b"")
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"document of {length} bytes is over the "
                         f"{MAX_DOCUMENT_BYTES}-byte limit")
    body = b""
    while len(body) <= MAX_DOCUMENT_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("the server is too slow sending the document")
        # read1: what one recv gives. read(n) waits for all n bytes (or the Content-Length),
        # so a server dripping a byte at a time held the fetch for minutes past the deadline.
        if conn.sock is not None:
            conn.sock.settimeout(min(left, conn.timeout or left))
        try:
            chunk = response.read1(16384)
        except TimeoutError:
            raise FetchError("the server is too slow sending the document") from None
        if not chunk:
            return Response(status, content_type, location, body)
        body += chunk
    raise FetchError(f"document is over the {MAX_DOCUMENT_BYTES}-byte limit")
