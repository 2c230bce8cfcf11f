"""``oeagent publish`` and ``oeagent unenroll``: plan, apply, verify across the backends.

publish:  derive the advertisement from the deployed identity (or mode ``none`` after
          ``unenroll``), plan every configured backend, print the plans as a diff, apply
          them in order (stopping at the first failure), remember which pins went out
          when, and verify from the outside.
unenroll: withdraw TLSA and IPSECKEY at once and publish mode ``none`` (TXT and document);
          one max_age later (or with ``--purge``) remove those markers too. Optionally
          remove the identity from NSS and revoke the certificate.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from oeagent import keyroll, publish, removal
from oeagent.config import PUBLISH_BACKENDS, Config
from oeagent.errors import ConfigError, OeagentError
from oeagent.publish import advertise
from oeagent.publish.base import Backend, Desired, Plan, PublishError, Verification
from oeagent.publish.zonefile import ZonefileBackend, nsupdate_script
from oeagent.report import Reporter
from oeagent.state import StateDir


def _backends(config: Config, state: StateDir, required: bool = True) -> list[Backend]:
    if not config.publish.enabled and not required:
        return []
    if not config.publish.enabled:
        raise ConfigError(["publish.backends: is empty, so there is nothing to publish: list "
                           f"any of {', '.join(PUBLISH_BACKENDS)}"], config.source)
    return [publish.make(name, config, state) for name in config.publish.backends]


def _target(config: Config, state: StateDir, ledger: advertise.Ledger, now: dt.datetime,
            purge: bool = False) -> tuple[Desired | None, str]:
    """What should be published now, and why."""
    since = ledger.unenrolled_time()
    if since is None:
        return advertise.desired(config, state, now), "advertising the deployed identity"
    if ledger.purged or purge or now >= since + dt.timedelta(seconds=config.publish.max_age):
        return None, f"unenrolled at {ledger.unenrolled_at}; the mode none markers are removed"
    return (advertise.desired(config, state, now, mode="none", none_since=since,
                              last_auth=ledger.auth),
            f"unenrolled at {ledger.unenrolled_at}: mode none until one max_age has passed")


def _report_plans(plans: list[Plan], reporter: Reporter, dry_run: bool) -> None:
    for plan in plans:
        verb = "would change" if dry_run else "changes"
        reporter.step("plan", plan.text() if plan.empty else f"{verb}:\n{plan.text()}",
                      backend=plan.backend, changes=[str(d) for d in plan.diffs])
        if plan.backend == ZonefileBackend.name and not plan.empty:
            reporter.step("nsupdate", "nsupdate input for the same change:\n"
                          + nsupdate_script(plan), backend=plan.backend)


def _verify(backends: list[Backend], target: Desired | None, config: Config,
            reporter: Reporter) -> list[Verification]:
    results = []
    for backend in backends:
        result = backend.verify(target, config.publish.verify_timeout)
        for check in result.checks:
            reporter.step("verify", f"{backend.name}: {check.what}: "
                          f"{'ok' if check.ok else 'NOT OK'}: {check.detail}",
                          backend=backend.name, ok=check.ok)
        results.append(result)
    return results


def _summary(target: Desired | None) -> dict[str, Any]:
    if target is None:
        return {"advertisement": None}
    return {"advertisement": {**target.advert.document(target.expires)}}


def _run(config: Config, state: StateDir, backends: list[Backend], target: Desired | None,
         reporter: Reporter, dry_run: bool) -> dict[str, Any]:
    plans = [backend.plan(target) for backend in backends]
    _report_plans(plans, reporter, dry_run)
    result: dict[str, Any] = {"dry_run": dry_run, **_summary(target),
                              "plans": [{"backend": p.backend, "changes": [str(d) for d in p.diffs]}
                                        for p in plans]}
    if dry_run:
        return result
    applied = []
    for backend, plan in zip(backends, plans, strict=True):
        done = backend.apply(plan)
        applied.append({"backend": backend.name, "changes": len(done.diffs),
                        "attempts": done.attempts})
        if not done.empty:
            again = f" (re-planned {done.attempts - 1} time(s) after a concurrent change)" \
                if done.attempts > 1 else ""
            reporter.step("apply", f"{backend.name}: applied {len(done.diffs)} change(s){again}",
                          backend=backend.name, attempts=done.attempts)
    result["applied"] = applied
    verifications = _verify(backends, target, config, reporter)
    result["verify"] = [v.as_dict() for v in verifications]
    result["not_visible"] = [c.what for v in verifications for c in v.checks if not c.ok]
    return result


def _remove_stale(state: StateDir, reporter: Reporter) -> None:
    """As enroll and renew do: temp files a killed run left behind (they never replaced a
    real file) go at the start of the next run."""
    for stale in state.remove_stale_temp_files():
        reporter.step("recover", f"removed {stale.name}, left by an interrupted run")


def _failures(checks: list[dict[str, Any]]) -> str:
    """The failed checks, grouped by what was seen, so the reason is in the message: e.g.
    "_oe.x TXT published, x IPSECKEY published: resolver 127.0.0.1#53: UNREACHABLE ..."."""
    by_detail: dict[str, list[str]] = {}
    for check in checks:
        if not check["ok"]:
            by_detail.setdefault(check["detail"], []).append(check["what"])
    return "; ".join(f"{', '.join(whats)}: {detail}" for detail, whats in by_detail.items())


def _raise_if_not_visible(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("not_visible"):
        checks = [c for v in result.get("verify", []) for c in v["checks"]]
        raise PublishError("applied, but not visible as published: " + _failures(checks))
    return result


def run_publish(config: Config, reporter: Reporter, *, dry_run: bool = False,
                verify_only: bool = False, resume: bool = False,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """``oeagent publish``. ``resume``: a new enrollment ends an earlier unenroll."""
    state = StateDir(config.state_dir)
    now = now or dt.datetime.now(dt.UTC)
    backends = _backends(config, state)
    if dry_run or verify_only:
        # Reads only: no lock, nothing written (not even the state directory).
        ledger = advertise.Ledger.load(state) if state.root.exists() else advertise.Ledger({})
        target, why = _target(config, state, ledger, now)
        reporter.step("advertise", why, **_summary(target))
        if dry_run:
            return _run(config, state, backends, target, reporter, dry_run=True)
        verifications = _verify(backends, target, config, reporter)
        checks = [c for v in verifications for c in v.as_dict()["checks"]]
        if not all(c["ok"] for c in checks):
            raise PublishError(f"not visible as published: {_failures(checks)}")
        return {**_summary(target), "verify": [v.as_dict() for v in verifications]}
    with state.lock(config.lock_timeout):
        _remove_stale(state, reporter)
        ledger = advertise.Ledger.load(state)
        if resume and ledger.unenrolled_at:
            reporter.step("advertise", f"enrolled again: ending the unenroll of "
                          f"{ledger.unenrolled_at}")
            ledger = advertise.Ledger({})
        target, why = _target(config, state, ledger, now)
        reporter.step("advertise", why, **_summary(target))
        result = _run(config, state, backends, target, reporter, dry_run=False)
        ledger.note_pins(target.advert.pins if target else (), now)
        ledger.purged = target is None
        ledger.save(state, target.advert if target else None)
        for pin in (target.advert.pins[1:] if target else ()):
            # Tell the key rollover when the next key's pin first went out.
            keyroll.mark_announced(state, pin, dt.datetime.fromisoformat(ledger.pins[pin]))
        return _raise_if_not_visible(result)


def publish_after_deploy(config: Config, reporter: Reporter, *, what: str,
                         enrolled_again: bool = False) -> dict[str, Any] | None:
    """After ``enroll`` or ``renew``: bring the advertisement in step with what is deployed.

    ``enrolled_again`` (``enroll`` issued a certificate, or deployed one after ``unenroll
    --remove-nss``) ends an unenroll: the host is advertised again. Does nothing when
    publishing is not configured. A failure keeps its exit status but says that the
    certificate part worked, so nobody rolls back a good certificate over it.
    """
    if not config.publish.enabled:
        return None
    try:
        return run_publish(config, reporter, resume=enrolled_again)
    except OeagentError as exc:
        failure = OeagentError(f"{what} succeeded, but publishing failed: {exc}")
        failure.exit_code = exc.exit_code
        raise failure from exc


def run_unenroll(config: Config, reporter: Reporter, *, purge: bool = False,
                 dry_run: bool = False, remove_nss: bool = False, revoke: bool = False,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """``oeagent unenroll``: mode none now, nothing after one max_age (or ``--purge``).

    ``revoke`` implies ``remove_nss``: pluto must not keep presenting a revoked certificate.
    Both happen after the advertisement is withdrawn, so clients are told first.
    """
    remove_nss = remove_nss or revoke
    state = StateDir(config.state_dir)
    now = now or dt.datetime.now(dt.UTC)
    # Without publish.backends nothing was advertised, so there is nothing to withdraw; the
    # identity can still be removed from NSS (and revoked).
    backends = _backends(config, state, required=False)
    if not backends:
        reporter.step("unenroll", "publishing is not configured: no advertisement to withdraw")
    if dry_run:
        result: dict[str, Any] = {"dry_run": True}
        if backends:
            ledger = advertise.Ledger.load(state) if state.root.exists() else advertise.Ledger({})
            ledger.unenrolled_at = ledger.unenrolled_at or now.isoformat()
            target, why = _target(config, state, ledger, now, purge=purge)
            reporter.step("unenroll", why)
            result = _run(config, state, backends, target, reporter, dry_run=True)
        if remove_nss:
            reporter.step("plan", f"would delete '{config.nss.nickname}' from "
                          f"{config.nss.database}" + (" and revoke it at the CA" if revoke else "")
                          + "; renewals would leave it out of NSS until `oeagent enroll`")
        return result
    with state.lock(config.lock_timeout):
        _remove_stale(state, reporter)
        result = {"dry_run": False}
        if backends:
            result = _withdraw_advertisement(config, state, backends, reporter, purge, now)
        if remove_nss:
            result["nss_removed"] = _remove_from_nss(config, state, reporter, now)
        if revoke:
            result["revoked"] = _revoke(config, state, reporter)
            removal.record(state, now, revoked=True)
        return _raise_if_not_visible(result)


def _withdraw_advertisement(config: Config, state: StateDir, backends: list[Backend],
                            reporter: Reporter, purge: bool, now: dt.datetime
                            ) -> dict[str, Any]:
    ledger = advertise.Ledger.load(state)
    ledger.unenrolled_at = ledger.unenrolled_at or now.isoformat()
    # Recorded first: a crash from here on still leaves the host unenrolled, and a rerun
    # (or `oeagent publish`) carries on withdrawing instead of advertising again.
    ledger.save(state, None)
    target, why = _target(config, state, ledger, now, purge=purge)
    reporter.step("unenroll", why)
    result = _run(config, state, backends, target, reporter, dry_run=False)
    ledger.note_pins((), now)
    ledger.purged = target is None
    ledger.save(state, target.advert if target else None)
    return result


def _revoke(config: Config, state: StateDir, reporter: Reporter) -> str:
    from oeagent import certstore
    from oeagent.ca.revoke import revoke_certificate  # the ACME stack only when asked for

    current = certstore.load_current(state)
    if current is None:
        raise PublishError("nothing to revoke: no certificate in the state directory")
    revoke_certificate(config, state, current.cert, reporter)
    # A revoked certificate must never be deployed again: without a current one, the next
    # `oeagent enroll` issues a new certificate (and so ends the unenroll).
    state.current_path.unlink(missing_ok=True)
    return current.serial_hex


def _remove_from_nss(config: Config, state: StateDir, reporter: Reporter,
                     now: dt.datetime) -> int:
    from oeagent import pluto
    from oeagent.deploy import open_database

    # Recorded before NSS is touched: from here on renewals leave the identity out of NSS,
    # even if this run is killed halfway (a rerun finishes the removal).
    on_record = removal.record(state, now)
    reporter.step("unenroll", f"recorded in {state.removed_path.name}: renewals leave the "
                  f"identity out of NSS until `oeagent enroll` (since "
                  f"{on_record.at.isoformat(timespec='seconds')})")
    db = open_database(config)
    removed = db.purge(config.nss.nickname) if db.exists() else 0
    state.deployed_path.unlink(missing_ok=True)
    reporter.step("nss", f"removed {removed} certificate(s) under '{config.nss.nickname}' "
                  f"from {config.nss.database}", removed=removed)
    notified = pluto.reread_certs(config.pluto.ctlsocket, nickname=config.nss.nickname,
                                  ipsec_dir=config.pluto.ipsec_dir, config=config.pluto.config,
                                  removed=True)
    reporter.step("pluto", f"pluto: {notified}" if notified else "pluto is not running",
                  pluto_running=notified is not None)
    return removed
