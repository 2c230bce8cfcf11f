"""When a certificate is due: the decision ``enroll`` (and later ``renew``) acts on.

Without ACME Renewal Information the rule is lifetime-relative, so it works the same for
160-hour, 45-day and 90-day certificates: renew when one third of the lifetime remains, or one
half for lifetimes of ten days or less (short-lived certificates get more room for retries).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from oeagent.certstore import StoredCertificate
from oeagent.config import Config
from oeagent.keys import PrivateKey, key_algorithm, same_key

SHORT_LIFETIME = dt.timedelta(days=10)


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    renew_after: dt.datetime | None = None


def renewal_time(cert: StoredCertificate) -> dt.datetime:
    lifetime = cert.not_after - cert.not_before
    remaining_fraction = 0.5 if lifetime <= SHORT_LIFETIME else 1 / 3
    return cert.not_after - lifetime * remaining_fraction


def decide(
    config: Config, cert: StoredCertificate | None, key: PrivateKey | None, now: dt.datetime
) -> Decision:
    """Whether a new certificate is needed, and why (said to the user as it is)."""
    if cert is None:
        return Decision(True, "no certificate issued yet")
    if key is None or not same_key(cert.cert, key):
        return Decision(True, "the stored certificate does not match the certificate key")
    if key_algorithm(key) != config.key.algorithm:
        return Decision(True, f"key algorithm changed to {config.key.algorithm}")
    wanted_names = sorted(config.host.names)
    wanted_ips = sorted(config.host.addresses)
    if cert.dns_names() != wanted_names or cert.ip_addresses() != wanted_ips:
        return Decision(True, "the configured names or addresses differ from the certificate's")
    if now >= cert.not_after:
        return Decision(True, f"the certificate expired at {cert.not_after.isoformat()}")
    when = renewal_time(cert)
    if now >= when:
        return Decision(True, f"renewal was due at {when.isoformat()}", when)
    return Decision(
        False, f"valid until {cert.not_after.isoformat()}, renewal due at {when.isoformat()}", when
    )
