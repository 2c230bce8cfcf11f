"""Fetching ``https://<fqdn>/.well-known/oe-ipsec`` the way a careful client does.

The address comes from the validating resolver (not the system's), TLS is verified for the
fqdn against the given bundle (default: the system store), redirects are refused (only 200
counts, as MTA-STS requires) and the body is bounded.
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
    status: int
    content_type: str
    body: bytes


class _AddressedConnection(http.client.HTTPSConnection):
    """Connect to a given address, but send SNI and verify the certificate for the name."""

    def __init__(self, fqdn: str, address: str, port: int, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(fqdn, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def fetch(fqdn: str, address: str, *, port: int = 443, path: str = WELL_KNOWN_PATH,
          cafile: Path | None = None, timeout: float = 10.0) -> Fetched:
    """GET ``path`` from ``fqdn`` at ``address``; raises OSError/ssl.SSLError on failure."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    connection = _AddressedConnection(fqdn, address, port, context, timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json",
                                                 "User-Agent": "oeagent"})
        response = connection.getresponse()
        # Bounded in time as a whole, not per byte: read1 returns what one recv gives, so
        # a server dripping bytes meets the deadline (read(n) would wait for all n).
        deadline = time.monotonic() + timeout
        body = b""
        while len(body) <= MAX_DOCUMENT_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the document took longer than {timeout:g} s to arrive")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(MAX_DOCUMENT_BYTES + 1 - len(body))
            if not chunk:
                break
            body += chunk
        return Fetched(response.status, response.getheader("Content-Type", ""), body)
    finally:
        connection.close()
