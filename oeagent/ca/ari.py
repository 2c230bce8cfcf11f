"""ACME Renewal Information (RFC 9773): ask the CA when to renew, and say what we replace.

The ``acme`` library has half of this: ``ClientV2.renewal_time`` picks a time in the window
but drops the window itself, the explanation URL and an aware Retry-After, and its
``new_order`` cannot send ``replaces``. ``AriClient`` extends ``ClientV2`` with both, using
the library's own request plumbing, so the rest of the flow (polling, finalize) is unchanged.
Let's Encrypt exempts a renewal from its rate limits only when ``replaces`` is sent.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from acme import client as acme_client
from acme import crypto_util, messages
from cryptography import x509
from josepy.json_util import field

from oeagent.ca.polling import parse_retry_after
from oeagent.errors import AcmeError

# RFC 9773 §4.3: without (or with a broken) Retry-After, check again in six hours; clamp the
# CA's value to [1 minute, 1 day] so a typo at the CA can neither hammer it nor silence us.
DEFAULT_RECHECK = 6 * 3600.0
MIN_RECHECK = 60.0
MAX_RECHECK = 86400.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert: x509.Certificate) -> str:
    """The ARI certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial DER).

    The serial is the DER INTEGER's content octets (two's complement, so a leading 0x00 when
    the top bit is set), RFC 9773 §4.1.
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AcmeError(
            "the certificate has no Authority Key Identifier; ARI cannot name it"
        ) from None
    if aki.key_identifier is None:
        raise AcmeError("the certificate's Authority Key Identifier has no keyIdentifier")
    serial = cert.serial_number
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8 or 1, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_der)}"


@dataclass(frozen=True)
class RenewalInfo:
    """One renewalInfo answer: the CA's suggested window and when to ask again."""

    start: dt.datetime
    end: dt.datetime
    explanation_url: str | None
    recheck_after: float
    """Seconds until the next check (Retry-After, clamped)."""

    @classmethod
    def parse(cls, document: dict[str, Any], retry_after: str | None,
              now: dt.datetime) -> RenewalInfo:
        """Validate a renewalInfo JSON body (RFC 9773 §4.2) and its Retry-After header."""
        try:
            window = document["suggestedWindow"]
            start = _aware(dt.datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00")))
            end = _aware(dt.datetime.fromisoformat(str(window["end"]).replace("Z", "+00:00")))
        except (KeyError, TypeError, ValueError) as exc:
            raise AcmeError(
                f"the CA's renewalInfo is malformed: {type(exc).__name__}: {exc}"
            ) from None
        if end < start:
            raise AcmeError("the CA's renewalInfo window ends before it starts")
        seconds = parse_retry_after(retry_after, now, cap=None)
        recheck = DEFAULT_RECHECK if seconds is None else min(max(seconds, MIN_RECHECK),
                                                              MAX_RECHECK)
        url = document.get("explanationURL")
        return cls(start, end, url if isinstance(url, str) else None, recheck)


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


class NewOrderReplacing(messages.NewOrder):
    """A newOrder payload with RFC 9773 §5's ``replaces`` field."""

    replaces: str | None = field("replaces", omitempty=True)


class AriClient(acme_client.ClientV2):
    """ClientV2 that reads renewalInfo and can send ``replaces`` on a new order."""

    def supports_ari(self) -> bool:
        return "renewalInfo" in self.directory.to_partial_json()

    def renewal_info(self, cert: x509.Certificate,
                     now: dt.datetime | None = None) -> RenewalInfo | None:
        """The CA's current renewalInfo for ``cert``, or None when the CA offers no ARI.

        An unauthenticated GET (RFC 9773 §4.1); errors are the library's, for ``translated``.
        """
        if not self.supports_ari():
            return None
        base = str(self.directory.to_partial_json()["renewalInfo"]).rstrip("/")
        response = self.net.get(f"{base}/{cert_id(cert)}", content_type="application/json")
        return RenewalInfo.parse(response.json(), response.headers.get("Retry-After"),
                                 now or dt.datetime.now(dt.UTC))

    def new_order(self, csr_pem: bytes, profile: str | None = None,
                  replaces: str | None = None) -> messages.OrderResource:
        """As ``ClientV2.new_order``, plus ``replaces`` (the ARI id of the old certificate)."""
        if not replaces:
            return super().new_order(csr_pem, profile=profile)
        csr = x509.load_pem_x509_csr(csr_pem)
        dns_names, ip_addrs = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                       for name in dns_names]
        identifiers += [messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip))
                        for ip in ip_addrs]
        payload = NewOrderReplacing(identifiers=identifiers, profile=profile or "",
                                    replaces=replaces)
        response = self._post(self.directory["newOrder"], payload)
        body = messages.Order.from_json(response.json())
        authorizations = [self._authzr_from_response(self._post_as_get(url), uri=url)
                          for url in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)
