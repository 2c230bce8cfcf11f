"""The HTTPS fallback: fetch ``https://<name>/.well-known/oe-ipsec`` and nothing else.

The fetching rules (pinned address, SNI + PKIX, no redirects, 200 only, 64 KiB, deadlines)
are ``oeagent.wellknown_fetch``'s, shared with publishing's verification. What discovery adds:
every failure becomes a reason that names the URL, and "not published" (no connection, 404,
410) is told apart from a server that answered wrongly (which makes the peer ``invalid``).
The body goes to the strict parser in ``oeagent.advertisement``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from oeagent import wellknown_fetch
from oeagent.wellknown_fetch import tls_context

__all__ = ["Fetched", "fetch", "tls_context"]


@dataclass(frozen=True)
class Fetched:
    """What one GET gave: a body, or why there is none (``absent``: nothing is published)."""

    body: bytes | None
    reason: str = ""
    absent: bool = False
    """True when the server is simply not publishing (no connection, 404): not hostile."""


def fetch(
    name: str, address: str, *, port: int, context: ssl.SSLContext, timeout: float
) -> Fetched:
    """GET the well-known document of ``name`` from ``address``; never raises for network errors.

    The whole fetch is bounded by twice ``timeout`` (``discovery.https_timeout``).
    """
    where = wellknown_fetch.url(name, port)
    try:
        response = wellknown_fetch.get(name, address, port=port, context=context,
                                       timeout=timeout)
    except wellknown_fetch.FetchError as exc:
        return Fetched(None, f"{where}: {exc.reason}", absent=exc.absent)
    refused = response.refusal()
    if refused is not None:
        reason, absent = refused
        return Fetched(None, f"{where}: {reason}", absent=absent)
    return Fetched(response.body)
