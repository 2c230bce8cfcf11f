"""Talking to the CA: the HTTPS session (trust, timeout, user agent) and error translation.

Trust pitfall: ``acme.client.ClientNetwork`` passes ``verify=self.verify_ssl`` (a bool) on
EVERY request, and a per-request ``verify=True`` overrides ``session.verify`` (and lets
``$REQUESTS_CA_BUNDLE`` in), so setting ``net.session.verify = bundle`` silently does nothing.
Instead we mount a transport adapter that always verifies against the trust we chose,
whatever ``verify`` value arrives: the operator's bundle, else the system store (requests
alone would use certifi's copy, not the system's). Verification can never be turned off.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWK

from oeagent import __version__
from oeagent.ca.polling import parse_retry_after
from oeagent.config import AcmeConfig
from oeagent.errors import AcmeError

log = logging.getLogger(__name__)

USER_AGENT = f"oeagent/{__version__}"


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """Verifies every HTTPS connection against one fixed CA file or directory."""

    def __init__(self, trust: str) -> None:
        self._trust = trust
        super().__init__()

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        return super().send(request, stream=stream, timeout=timeout, verify=self._trust,
                            cert=cert, proxies=proxies)


class _Network(acme_client.ClientNetwork):
    """ClientNetwork that retries a rejected nonce (RFC 8555 §6.5) a few more times.

    The library retries once; Pebble rejects 5% of nonces by default and Let's Encrypt
    occasionally does too, so two in a row (about 1 in 400 requests) would fail an issuance.
    A CA under stress rejecting half of them (PEBBLE_WFE_NONCEREJECT=50) failed one enroll
    in seven with 3 rounds (6 tries per POST); 8 rounds (16 tries, each one cheap round
    trip) make that about one POST in 65,000.
    """

    BAD_NONCE_RETRIES = 8

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(self.BAD_NONCE_RETRIES):
            try:
                return super().post(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == self.BAD_NONCE_RETRIES - 1:
                    raise
                log.debug("badNonce twice; retrying: %s", error)
        raise AssertionError("unreachable")


    def _check_response(  # type: ignore[override]
        self, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        """Keep what the library drops from an error answer: Retry-After (rate limits,
        RFC 8555 §6.6) and RFC 9773's ``alreadyReplaced``, which arrives as a 409 that the
        library would turn into an account ConflictError."""
        problem = _problem_of(response) if response.status_code == 409 else None
        try:
            if problem is not None and str(problem.typ).endswith(":alreadyReplaced"):
                raise problem
            return super()._check_response(response, content_type=content_type)
        except messages.Error as error:
            # The library's problem object is immutable (josepy); this extra attribute is ours.
            object.__setattr__(error, RETRY_AFTER_ATTR, response.headers.get("Retry-After"))
            raise


RETRY_AFTER_ATTR = "oeagent_retry_after"


def _problem_of(response: requests.Response) -> messages.Error | None:
    try:
        problem: messages.Error = messages.Error.from_json(response.json())
        return problem
    except (ValueError, DeserializationError):
        return None


def problem_code(error: messages.Error) -> str:
    """The problem type's last part, also for types the library does not know."""
    return str(error.typ or "").rsplit(":", 1)[-1]


def system_trust() -> str | None:
    """The system CA store (Debian: /etc/ssl/certs/ca-certificates.crt), if there is one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, paths.capath, paths.openssl_capath):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def make_network(config: AcmeConfig, key: JWK | None = None) -> acme_client.ClientNetwork:
    net = _Network(
        key, alg=ES256, verify_ssl=True, user_agent=USER_AGENT,
        # The library types it int; requests takes a float, but whole seconds are plenty.
        timeout=math.ceil(config.network_timeout),
    )
    trust = str(config.ca_bundle) if config.ca_bundle else system_trust()
    if trust is not None:  # else requests' own default (certifi), still verifying
        net.session.mount("https://", _TrustAdapter(trust))
    return net


def problem_text(error: messages.Error) -> str:
    """One line from an ACME problem document: the CA's detail, and its subproblems."""
    text = error.detail or error.title or error.description or str(error.typ)
    code = error.code or str(error.typ)
    parts = [f"{text} ({code})"]
    for sub in error.subproblems or ():
        who = f"{sub.identifier.value}: " if sub.identifier is not None else ""
        parts.append(f"{who}{sub.detail or sub.code or sub.typ}")
    return "; ".join(parts)


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


@contextlib.contextmanager
def translated(action: str, url: str) -> Iterator[None]:
    """Turn what acme/requests/josepy raise while doing ``action`` into one-line AcmeErrors."""
    try:
        yield
    except AcmeError:
        raise
    except requests.exceptions.SSLError as exc:
        log.debug("TLS error talking to %s", url, exc_info=True)
        reason = _reason(exc)
        hint = "if it is a private CA, set acme.ca_bundle to its PEM file"
        if "expired" in reason or "not yet valid" in reason:
            # Judged by this host's clock: a clock far off looks just like this.
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            hint = f"this host's clock says {now}: if that is wrong, fix the clock (NTP)"
        raise AcmeError(
            f"cannot {action}: the certificate of the CA at {_host(url)} is not trusted "
            f"({reason}); {hint}"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        log.debug("network error talking to %s", url, exc_info=True)
        raise AcmeError(
            f"cannot {action}: the CA at {_host(url)} is unreachable ({_reason(exc)})"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"cannot {action}: HTTP error from {_host(url)} ({_reason(exc)})") from None
    except messages.Error as exc:
        raise AcmeError(
            f"cannot {action}: the CA said: {problem_text(exc)}",
            code=problem_code(exc),
            retry_after=parse_retry_after(getattr(exc, RETRY_AFTER_ATTR, None), cap=None),
        ) from None
    except acme_errors.ClientError as exc:
        # Non-JSON error pages (a proxy's 502, a wrong URL's 404) arrive as ClientError(response).
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, requests.Response):
            detail = f"HTTP {detail.status_code} {detail.reason} from {detail.url}"
        raise AcmeError(f"cannot {action}: unexpected answer from the CA: {detail}") from None
    except (acme_errors.Error, DeserializationError, ValueError, KeyError) as exc:
        # ValueError: a non-JSON body; KeyError: a directory missing a resource.
        log.debug("protocol error talking to %s", url, exc_info=True)
        raise AcmeError(
            f"cannot {action}: unexpected answer from the CA at {_host(url)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _reason(exc: BaseException) -> str:
    """The useful sentence buried in requests -> urllib3 -> socket/ssl exception wrappers."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        inner = todo.pop(0)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            continue
        seen.add(id(inner))
        if isinstance(inner, ssl.SSLCertVerificationError):
            return inner.verify_message or str(inner)
        if isinstance(inner, TimeoutError | socket.timeout) or "timed out" in str(inner):
            return "timed out (acme.network_timeout)"
        if isinstance(inner, OSError) and inner.strerror and not isinstance(inner, ssl.SSLError):
            return inner.strerror
        # urllib3 keeps the cause in .reason; requests in args[0]; Python in __cause__/__context__
        todo += [getattr(inner, "reason", None), *inner.args, inner.__cause__, inner.__context__]
    text = str(exc)
    return text if len(text) <= 160 else text[:157] + "..."


def get_directory(config: AcmeConfig, net: acme_client.ClientNetwork) -> messages.Directory:
    with translated("read the ACME directory", config.directory):
        return acme_client.ClientV2.get_directory(config.directory, net)


def post_as_get(client: acme_client.ClientV2, url: str) -> requests.Response:
    """A POST-as-GET (RFC 8555 §6.3) through the public ``ClientNetwork.post``."""
    return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])
