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

import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oeagent.advertisement import MAX_DOCUMENT_BYTES, WELL_KNOWN_PATH
from oeagent.errors import OeagentError


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
            # The peer's own text, bound for a terminal: escape sequences stay visible only.
            target = "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                             for c in self.location)
            return f"refusing to follow a redirect ({self.status} to {target})", False
        if self.status in (404, 410):
            return f"not published (HTTP {self.status})", True
        if self.status != 200:
            return f"HTTP {self.status}, only 200 is accepted", False
        return None


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """PKIX against ``ca_bundle`` (default: the system store), TLS 1.2 or later."""
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except OSError as exc:  # ssl.SSLError too: a PEM header with a broken body
        raise OeagentError(f"cannot load CA certificates from {ca_bundle}: {exc}") from None
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
    clipped = _Clipped(raw, deadline, timeout)
    try:
        try:
            tls = context.wrap_socket(raw, server_hostname=fqdn, do_handshake_on_connect=False)
            clipped.sock = tls  # wrapping detaches raw: close the TLS socket from now on
            # One call: the ssl module bounds the whole handshake by the socket's timeout,
            # clipped here to the deadline.
            clipped.clip()
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"certificate rejected: {exc.verify_message}") from None
        except (ssl.SSLError, OSError) as exc:
            if clipped.expired():
                raise FetchError(too_slow) from None
            raise FetchError(f"TLS handshake failed: {exc}") from None
        conn = http.client.HTTPSConnection(fqdn, port, timeout=timeout, context=context)
        conn.sock = clipped  # connected, verified for ``fqdn``
        try:
            return _exchange(conn)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, FetchError) as exc:
        if clipped.expired():
            raise FetchError(too_slow) from None
        if isinstance(exc, FetchError):
            raise
        if isinstance(exc, TimeoutError):
            raise FetchError("timed out") from None
        raise FetchError(f"HTTP failed: {type(exc).__name__}: {exc}") from None
    finally:
        clipped.shut()


class _Clipped:
    """The connection as http.client sees it: every read and write first clips the socket's
    timeout to what is left before the overall deadline, and one past it fails at once.

    Per-read timeouts alone let a server that trickles the status line or the headers
    (http.client reads up to 100 header lines of 64 KiB each) hold a fetch for hours, a
    byte just inside each timeout. The ssl module bounds one read (and the whole handshake)
    by the socket's timeout, so no read can outlast the deadline, and no read starts after
    it. (Before this, a timer thread per fetch shut the socket down at the deadline: a
    thread start and a cancel per peer, ~13 % of discovery's interpreter time.)
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def clip(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("past the deadline")
        self.sock.settimeout(min(left, self.timeout))

    def settimeout(self, seconds: float | None) -> None:
        self.timeout = self.timeout if seconds is None else seconds

    def sendall(self, data: bytes) -> None:
        self.clip()
        self.sock.sendall(data)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        self.clip()
        return self.sock.recv_into(buffer, nbytes)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        assert mode == "rb"
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        """Nothing: http.client closes the connection when the response says
        ``Connection: close``, before the body is read (a real socket waits for its files to
        close); ``get`` closes the socket when the exchange is over."""

    def shut(self) -> None:
        self.sock.close()


class _Reader(io.RawIOBase):
    """What http.client's response reads from: each read one clipped ``recv_into``."""

    def __init__(self, conn: _Clipped) -> None:
        super().__init__()
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._conn.recv_into(buffer)


def _exchange(conn: http.client.HTTPSConnection) -> Response:
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
        # read1: what one recv gives. read(n) waits for all n bytes (or the Content-Length),
        # so a server dripping a byte at a time held the fetch for minutes past the deadline.
        # Each recv's timeout is clipped to the deadline, and none starts past it (_Clipped).
        try:
            chunk = response.read1(16384)
        except TimeoutError:
            raise FetchError("the server is too slow sending the document") from None
        if not chunk:
            return Response(status, content_type, location, body)
        body += chunk
    raise FetchError(f"document is over the {MAX_DOCUMENT_BYTES}-byte limit")
