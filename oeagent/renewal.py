"""When a certificate is due, and when to try again after a failure: pure rules, no I/O.

Order of precedence:

1. hard reasons (no certificate, key or names changed, expired): due now;
2. the CA's ACME Renewal Information (RFC 9773) when it has any: a random time inside its
   suggested window, kept while the window stays the same; a window in the past is the CA's
   "renew now";
3. otherwise the lifetime-relative rule, so 160-hour, 45-day and 90-day certificates are all
   handled: renew when one third of the lifetime remains (one half for lifetimes of ten days
   or less, which gives short-lived certificates more room for retries), made earlier by a
   random jitter of up to ``renewal.jitter`` of the lifetime so a fleet does not renew in step;
4. after a failure, not before the backoff (exponential with jitter, or the CA's Retry-After).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass

from oeagent.certstore import StoredCertificate
from oeagent.config import Config, RenewalConfig
from oeagent.keys import PrivateKey, key_algorithm, same_key
from oeagent.renewstate import AriRecord, RenewalRecord

SHORT_LIFETIME = dt.timedelta(days=10)
# A clock this far behind a certificate's start is a wrong clock, not NTP-level skew.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    renew_after: dt.datetime | None = None
    source: str = "rule"
    """``hard`` (a reason that is not about time), ``ari``, ``fallback`` or ``rule``."""


def renewal_time(cert: StoredCertificate) -> dt.datetime:
    """The lifetime rule without jitter."""
    lifetime = cert.not_after - cert.not_before
    remaining_fraction = 0.5 if lifetime <= SHORT_LIFETIME else 1 / 3
    return cert.not_after - lifetime * remaining_fraction


def jittered_time(cert: StoredCertificate, jitter: float, rng: random.Random) -> dt.datetime:
    lifetime = cert.not_after - cert.not_before
    return renewal_time(cert) - lifetime * (jitter * rng.random())


def hard_reason(config: Config, cert: StoredCertificate | None, key: PrivateKey | None,
                now: dt.datetime) -> str | None:
    if cert is None:
        return "no certificate issued yet"
    if key is None or not same_key(cert.cert, key):
        return "the stored certificate does not match the certificate key"
    if key_algorithm(key) != config.key.algorithm:
        return f"key algorithm changed to {config.key.algorithm}"
    if (cert.dns_names() != sorted(config.host.names)
            or cert.ip_addresses() != sorted(config.host.addresses)):
        return "the configured names or addresses differ from the certificate's"
    if now >= cert.not_after:
        return f"the certificate expired at {cert.not_after.isoformat()}"
    return None


def clock_behind(cert: StoredCertificate | None, now: dt.datetime) -> str | None:
    """Why the local clock must be wrong, when ``cert`` (issued by the CA on its clock) is
    not valid yet by ours; None otherwise.

    Nothing sensible can be decided then: the certificate would look fresh for as long as
    the clock is behind, and ``certutil -V`` and pluto on this host reject it as not yet
    valid. Renewing would not help either, so the caller stops and says so.
    """
    if cert is None or now >= cert.not_before - CLOCK_SKEW:
        return None
    behind = cert.not_before - now
    amount = (f"{behind.days} days" if behind.days >= 2
              else f"{behind.total_seconds() / 3600:.1f} hours")
    return (f"this host's clock is behind: it says {now.isoformat(timespec='seconds')}, but "
            f"certificate {cert.serial_hex} is valid only from "
            f"{cert.not_before.isoformat(timespec='seconds')} (about {amount} later); fix the "
            "system clock (NTP) and run again. Nothing was changed")


def decide(config: Config, cert: StoredCertificate | None, key: PrivateKey | None,
           now: dt.datetime, record: RenewalRecord | None = None) -> Decision:
    """Whether a new certificate is needed, and why (said to the user as it is).

    With a ``record`` (renew, the agent) its ARI window or jittered time decides; without
    one (enroll's first look) the plain lifetime rule does.
    """
    reason = hard_reason(config, cert, key, now)
    if reason is not None:
        return Decision(True, reason, None, "hard")
    assert cert is not None
    until = f"valid until {cert.not_after.isoformat()}"
    if record is not None and record.ari is not None:
        ari = record.ari
        if ari.end <= now:
            return Decision(True, f"the CA asks for renewal now (ARI window ended "
                            f"{ari.end.isoformat()})", ari.chosen, "ari")
        if ari.chosen <= now:
            return Decision(True, f"inside the CA's ARI window (renewal time "
                            f"{ari.chosen.isoformat()})", ari.chosen, "ari")
        return Decision(False, f"{until}; renewal at {ari.chosen.isoformat()}, inside the CA's "
                        f"ARI window {ari.start.isoformat()} .. {ari.end.isoformat()}",
                        ari.chosen, "ari")
    fallback = _stored_fallback(record, cert)
    when = fallback or renewal_time(cert)
    source = "fallback" if fallback else "rule"
    if now >= when:
        return Decision(True, f"renewal was due at {when.isoformat()}", when, source)
    return Decision(False, f"{until}, renewal due at {when.isoformat()}", when, source)


def _stored_fallback(record: RenewalRecord | None, cert: StoredCertificate) -> dt.datetime | None:
    """The jittered time kept in renewal.json, if it is one ``jittered_time`` could have
    drawn: a damaged one in year 9999 would keep the certificate 'not due' until it
    expired, one before its issue renew it at once."""
    if record is None or record.fallback_at is None:
        return None
    if not cert.not_before <= record.fallback_at <= renewal_time(cert):
        return None
    return record.fallback_at


def with_fallback_time(record: RenewalRecord, cert: StoredCertificate, cfg: RenewalConfig,
                       rng: random.Random) -> RenewalRecord:
    """Fix the jittered lifetime-rule time once per certificate (so restarts keep it)."""
    if _stored_fallback(record, cert) is not None:
        return record
    return dataclasses.replace(record, fallback_at=jittered_time(cert, cfg.jitter, rng))


def with_ari(record: RenewalRecord, start: dt.datetime, end: dt.datetime,
             explanation_url: str | None, recheck_after: float, now: dt.datetime,
             rng: random.Random) -> RenewalRecord:
    """Record a renewalInfo answer; keep the chosen time while the window is unchanged."""
    old = record.ari
    if old is not None and old.start == start and old.end == end:
        chosen = old.chosen
    else:
        chosen = start + (end - start) * rng.random()
    ari = AriRecord(start, end, chosen, now + dt.timedelta(seconds=recheck_after), now,
                    explanation_url)
    return dataclasses.replace(record, ari=ari)


def backoff_seconds(failures: int, cfg: RenewalConfig, rng: random.Random,
                    time_left: float | None = None) -> float:
    """The wait after the ``failures``-th failure in a row: doubling from retry_initial up to
    retry_max, with +-25 % jitter, and never more than an eighth of the certificate's
    remaining time (so a 160-hour certificate still gets many tries before it lapses)."""
    delay = cfg.retry_initial * 2.0 ** min(max(failures - 1, 0), 40)
    delay = min(delay, cfg.retry_max)
    if time_left is not None and time_left > 0:
        delay = min(delay, max(cfg.retry_initial, time_left / 8))
    return delay * rng.uniform(0.75, 1.25)


def after_failure(record: RenewalRecord, cfg: RenewalConfig, now: dt.datetime,
                  retry_after: float | None, not_after: dt.datetime | None,
                  rng: random.Random) -> RenewalRecord:
    """One more failure: when to try next. The CA's Retry-After wins over our backoff."""
    failures = record.failures + 1
    time_left = (not_after - now).total_seconds() if not_after is not None else None
    wait = backoff_seconds(failures, cfg, rng, time_left)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return dataclasses.replace(record, failures=failures,
                               next_attempt=now + dt.timedelta(seconds=wait))


def will_lapse(record: RenewalRecord, cert: StoredCertificate | None) -> bool:
    """True when the next attempt comes after the working certificate expires."""
    if cert is None or record.failures == 0 or record.next_attempt is None:
        return False
    return record.next_attempt >= cert.not_after
