"""``oeagent renew``: renew what is due, with enroll's lock, deploy path and output.

    lock -> recover -> schedule (ARI / jittered rule, persisted) -> prepare next key ->
    backoff gate -> issue (``replaces``; the next key when announced long enough) ->
    keep -> deploy + hooks -> record

A failure anywhere before the NSS swap leaves NSS untouched; a failed swap rolls back to the
working certificate. Either way the failure is recorded with its backoff, and when the next
attempt would come after the working certificate expires, oeagent says loudly that it will
lapse. The agent calls the same function; ``next_check`` tells it when to look again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import random

from oeagent import certstore, keyroll, keys, removal, renewal, renewstate
from oeagent.config import Config
from oeagent.deploy import check_database_access, is_deployed, recover_interrupted_swap
from oeagent.enroll import (
    Critical,
    EnrollResult,
    deploy_and_run_hooks,
    load_or_create_key,
    recover_dns01_leftovers,
)
from oeagent.errors import EX_TEMPFAIL, AcmeError, OeagentError, StateError
from oeagent.report import Reporter
from oeagent.state import StateDir

log = logging.getLogger(__name__)


class BackingOff(OeagentError):
    """Renewal is due but waits out the backoff after earlier failures (exit 75)."""

    exit_code = EX_TEMPFAIL


class ClockBehind(OeagentError):
    """The local clock is before the working certificate's start: nothing is done (exit 1)."""


def next_check(config: Config, record: renewstate.RenewalRecord,
               decision: renewal.Decision, now: dt.datetime) -> dt.datetime:
    """When the agent should look again: renewal time, ARI re-check, backoff; at most
    ``renewal.check_interval`` away."""
    if record.failures and record.next_attempt is not None and record.next_attempt > now:
        return record.next_attempt  # the backoff (or the CA's Retry-After) decides
    candidates = [now + dt.timedelta(seconds=config.renewal.check_interval)]
    if decision.renew_after is not None:
        candidates.append(decision.renew_after)
    if record.ari is not None:
        candidates.append(record.ari.next_check)
    current_key, upcoming_key = keyroll.current_and_next_keys(StateDir(config.state_dir), now)
    key_due = keyroll.next_key_due(config, current_key) if upcoming_key is None else None
    if key_due is not None:
        candidates.append(key_due)  # make the next key on time, to announce it long enough
    return max(min(candidates), now)


def _refresh_ari(config: Config, cert: certstore.StoredCertificate,
                 record: renewstate.RenewalRecord, now: dt.datetime, rng: random.Random,
                 reporter: Reporter) -> renewstate.RenewalRecord:
    if not config.renewal.ari or (record.ari is not None and record.ari.next_check > now):
        return record
    from oeagent.ca import fetch_renewal_info  # the ACME stack only when used

    try:
        info = fetch_renewal_info(config, cert.cert, now)
    except AcmeError as exc:
        # Not fatal: the last window (or the lifetime rule) still applies; ask again later.
        reporter.step("ari", f"warning: {exc}; using the last known schedule", level="warning")
        if record.ari is None:
            return record
        retry = now + dt.timedelta(seconds=config.renewal.retry_initial)
        return dataclasses.replace(record, ari=dataclasses.replace(record.ari, next_check=retry))
    if info is None:
        return dataclasses.replace(record, ari=None, ca_offers_ari=False)
    record = renewal.with_ari(dataclasses.replace(record, ca_offers_ari=True), info.start,
                              info.end, info.explanation_url, info.recheck_after, now, rng)
    assert record.ari is not None
    reporter.step("ari", f"the CA suggests renewing between {info.start.isoformat()} and "
                  f"{info.end.isoformat()}; chose {record.ari.chosen.isoformat()}, asking "
                  f"again at {record.ari.next_check.isoformat()}",
                  explanation_url=info.explanation_url)
    return record


def _ari_id(cert: certstore.StoredCertificate | None) -> str | None:
    if cert is None:
        return None
    from oeagent.ca import cert_id

    try:
        return cert_id(cert.cert)
    except AcmeError:
        return None


def renew(config: Config, reporter: Reporter, *, force: bool = False, dry_run: bool = False,
          now: dt.datetime | None = None, rng: random.Random | None = None,
          critical: Critical = contextlib.nullcontext) -> EnrollResult:
    state = StateDir(config.state_dir)
    now = now or dt.datetime.now(dt.UTC)
    rng = rng or random.SystemRandom()
    if dry_run:
        return _plan_only(config, state, reporter, force, now)
    with state.lock(config.lock_timeout):
        reporter.step("lock", f"holding the state lock in {state.root}")
        for stale in state.remove_stale_temp_files():  # as enroll: a killed run's leftovers
            reporter.step("recover", f"removed {stale.name}, left by an interrupted run")
        recover_interrupted_swap(config, state, reporter)
        recover_dns01_leftovers(config, state, reporter)
        current = certstore.load_current(state)
        removed = removal.load(state)
        if removed is not None:
            # The operator took the identity out on purpose: neither deploy it again nor,
            # after a revoke, order a new one (--force included). Only enroll ends it.
            reporter.step("check", f"nothing to do: {removed.explain()}")
            upcoming = now + dt.timedelta(seconds=config.renewal.check_interval)
            return EnrollResult(False, "unenrolled", current.summary() if current else None,
                                extra={"next_check": upcoming.isoformat(),
                                       "schedule": "unenrolled"})
        behind = renewal.clock_behind(current, now)
        if behind is not None:
            # Before any schedule, CA or NSS work: no order, no swap, no record churns.
            raise ClockBehind(behind)
        key_pem = state.read_bytes(state.cert_key_path)
        stored_key = keys.load_key_pem(key_pem, "certificate key") if key_pem else None
        record = renewstate.load(state).for_serial(current.serial_hex if current else None)
        hard = renewal.hard_reason(config, current, stored_key, now)
        if current is not None and hard is None:
            record = renewal.with_fallback_time(record, current, config.renewal, rng)
            record = _refresh_ari(config, current, record, now, rng, reporter)
            keyroll.prepare(config, state, reporter, now)
        decision = renewal.decide(config, current, stored_key, now, record)
        renewstate.save(state, record)
        upcoming = next_check(config, record, decision, now)
        extra: dict[str, object] = {"next_check": upcoming.isoformat(),
                                    "schedule": decision.source}

        if not force and not decision.due and current is not None and stored_key is not None:
            if is_deployed(config, state, current):
                reporter.step("check", f"nothing to do: certificate {current.serial_hex} is "
                              f"deployed and {decision.reason}")
                return EnrollResult(False, decision.reason, current.summary(), extra=extra)
            reporter.step("check", f"certificate {current.serial_hex} is current but not "
                          "deployed; deploying it")
            result, ran = deploy_and_run_hooks(config, state, current, stored_key, reporter,
                                               event="renew", previous_serial=None,
                                               critical=critical)
            return EnrollResult(False, "deployed the existing certificate", current.summary(),
                                result, hooks=ran, extra=extra).raise_for_hooks()

        if (not force and record.failures and record.next_attempt is not None
                and record.next_attempt > now):
            last = record.last_failure.reason if record.last_failure else "unknown"
            raise BackingOff(f"renewal is due ({decision.reason}) but backing off after "
                             f"{record.failures} failure(s) until "
                             f"{record.next_attempt.isoformat()}; last failure: {last}")
        reason = "forced with --force" if force and not decision.due else decision.reason
        reporter.step("check", f"a new certificate is needed: {reason}")
        try:
            return _issue(config, state, reporter, current, hard, reason, now, critical, extra)
        except OeagentError as exc:
            _record_failure(config, state, current, exc, now, rng, reporter)
            raise


def _issue(config: Config, state: StateDir, reporter: Reporter,
           current: certstore.StoredCertificate | None, hard: str | None, reason: str,
           now: dt.datetime, critical: Critical, extra: dict[str, object]) -> EnrollResult:
    check_database_access(config)  # a wrong NSS password stops us before the CA issues
    next_key = keyroll.switch_ready(config, state, now) if current and hard is None else None
    if next_key is not None:
        key = next_key
        reporter.step("key", "switching to the announced next certificate key",
                      spki_sha256=keys.spki_sha256(key))
    else:
        key = load_or_create_key(config, state, reporter,
                                 fresh=not config.key.reuse and current is not None)
    from oeagent.ca import issue_certificate

    # `replaces` only when the names are the same: it claims "this succeeds that one".
    replaces = _ari_id(current) if hard is None else None
    issued = issue_certificate(config, state, key, reporter, replaces=replaces)
    if not keys.same_key(issued.cert, key):
        raise StateError("the CA returned a certificate for a different key; not deploying it")
    if next_key is not None:
        keyroll.promote_next(state, now)  # key file before the certificate pointer
    stored = certstore.save(state, issued.cert, issued.chain)
    reporter.step("store", f"kept certificate {stored.serial_hex} in "
                  f"{state.cert_dir(stored.serial_hex)}")
    result, ran = deploy_and_run_hooks(
        config, state, stored, key, reporter, event="renew",
        previous_serial=current.serial_hex if current else None, critical=critical)
    keyroll.prepare(config, state, reporter, now)  # a new key's lifetime starts at its first use
    extra["next_check"] = _schedule_new(config, state, stored, now).isoformat()
    return EnrollResult(True, reason, stored.summary(), result, hooks=ran,
                        extra=extra).raise_for_hooks()


def _schedule_new(config: Config, state: StateDir, stored: certstore.StoredCertificate,
                  now: dt.datetime) -> dt.datetime:
    """Fix the new certificate's renewal time now, so the agent knows when to look again."""
    record = renewal.with_fallback_time(renewstate.load(state).for_serial(stored.serial_hex),
                                        stored, config.renewal, random.SystemRandom())
    renewstate.save(state, record)
    key_pem = state.read_bytes(state.cert_key_path)
    key = keys.load_key_pem(key_pem, "certificate key") if key_pem else None
    decision = renewal.decide(config, stored, key, now, record)
    # Without ARI the time is known; with ARI, ask the CA about the new certificate soon.
    upcoming = next_check(config, record, decision, now)
    if config.renewal.ari and record.ca_offers_ari:
        return min(upcoming, now + dt.timedelta(seconds=60))
    return upcoming


def _record_failure(config: Config, state: StateDir, current: certstore.StoredCertificate | None,
                    exc: OeagentError, now: dt.datetime, rng: random.Random,
                    reporter: Reporter) -> None:
    from oeagent.hooks import HookError

    if isinstance(exc, HookError):
        return  # the certificate was renewed; the hook's failure is reported by the caller
    record = renewstate.load(state).for_serial(current.serial_hex if current else None)
    retry_after = exc.retry_after if isinstance(exc, AcmeError) else None
    record = renewal.after_failure(record, config.renewal, now, retry_after,
                                   current.not_after if current else None, rng)
    record = dataclasses.replace(record, last_failure=renewstate.Event(
        now, current.serial_hex if current else None, str(exc),
        exc.code if isinstance(exc, AcmeError) else type(exc).__name__))
    renewstate.save(state, record)
    assert record.next_attempt is not None
    reporter.step("backoff", f"renewal failed ({record.failures} in a row); the working "
                  f"certificate stays deployed; next attempt at {record.next_attempt.isoformat()}",
                  failures=record.failures, next_attempt=record.next_attempt.isoformat())
    if renewal.will_lapse(record, current):
        assert current is not None
        message = (f"CERTIFICATE WILL LAPSE: {current.serial_hex} expires at "
                   f"{current.not_after.isoformat()} and renewal keeps failing "
                   f"({record.failures} failures; last: {exc}); fix it now")
        log.critical("%s", message)
        reporter.step("lapse", message, level="critical")


def _plan_only(config: Config, state: StateDir, reporter: Reporter, force: bool,
               now: dt.datetime) -> EnrollResult:
    """--dry-run: what renew would do, from local state alone; contacts nobody."""
    current = certstore.load_current(state) if state.root.exists() else None
    key_pem = state.read_bytes(state.cert_key_path) if state.root.exists() else None
    key = keys.load_key_pem(key_pem, "certificate key") if key_pem else None
    removed = removal.load(state)
    if removed is not None:
        reporter.step("plan", f"nothing to do: {removed.explain()}")
        return EnrollResult(False, "unenrolled", current.summary() if current else None,
                            dry_run=True, extra={"would_issue": False, "schedule": "unenrolled"})
    record = renewstate.load(state).for_serial(current.serial_hex if current else None)
    decision = renewal.decide(config, current, key, now, record)
    would = decision.due or force
    verb = "would renew" if would else "nothing to do"
    reporter.step("plan", f"{verb}: {decision.reason if decision.due or not force else 'forced'}")
    return EnrollResult(False, decision.reason, current.summary() if current else None,
                        dry_run=True, extra={"would_issue": would, "schedule": decision.source})
