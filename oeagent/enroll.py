"""``oeagent enroll``: make sure this host has a valid certificate deployed in NSS.

The flow, each step idempotent so an interrupted run converges when run again:

1. take the state lock (no two runs interleave) and finish any interrupted NSS swap;
2. load or create the certificate key (reused across renewals: it keeps DNS pins valid);
3. decide whether a certificate is needed (none yet, due, names changed, ``--force``);
4. if so, issue one from the ACME CA and keep it in the state directory;
5. deploy: trust anchors and identity into NSS (swap with rollback), verify, tell pluto.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from oeagent import certstore, hooks, keys, removal, renewal, renewstate
from oeagent.config import Config
from oeagent.deploy import (
    DeployResult,
    check_database_access,
    deploy_to_nss,
    is_deployed,
    recover_interrupted_swap,
)
from oeagent.errors import OeagentError, StateError
from oeagent.fsio import PRIVATE_FILE
from oeagent.report import Reporter
from oeagent.state import StateDir

Critical = Callable[[], AbstractContextManager[Any]]
"""A section a shutdown request must not interrupt (the agent defers SIGTERM inside it)."""


@dataclass
class EnrollResult:
    issued: bool
    reason: str
    certificate: dict[str, object] | None = None
    deploy: DeployResult | None = None
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    hooks: list[hooks.HookResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "issued": self.issued,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "certificate": self.certificate,
            "deploy": self.deploy.as_dict() if self.deploy else None,
            "hooks": [h.as_dict() for h in self.hooks],
            **self.extra,
        }

    def raise_for_hooks(self) -> EnrollResult:
        """A failed hook fails the run (non-zero exit) without undoing the certificate."""
        failed = [h for h in self.hooks if not h.ok]
        if failed:
            names = ", ".join(f"{h.argv[0]} ({h.detail})" for h in failed)
            raise hooks.HookError(
                f"the certificate is deployed, but {len(failed)} post-deploy hook"
                f"{'s' if len(failed) != 1 else ''} failed: {names}",
                result=self.as_dict(),
            )
        return self


def deploy_and_run_hooks(
    config: Config,
    state: StateDir,
    cert: certstore.StoredCertificate,
    key: keys.PrivateKey,
    reporter: Reporter,
    *,
    event: str,
    previous_serial: str | None,
    critical: Critical = contextlib.nullcontext,
) -> tuple[DeployResult, list[hooks.HookResult]]:
    """The one deploy path of enroll and renew: NSS swap, verify, pluto, record, hooks."""
    with critical():
        result = deploy_to_nss(config, state, cert, key, reporter)
        record = renewstate.load(state).for_serial(cert.serial_hex)
        renewstate.save(state, dataclasses.replace(
            record, failures=0, next_attempt=None,
            last_success=renewstate.Event(dt.datetime.now(dt.UTC), cert.serial_hex)))
    return result, hooks.run_post_deploy(config, state, cert, event, previous_serial, reporter)


def recover_dns01_leftovers(config: Config, state: StateDir, reporter: Reporter) -> None:
    """Delete the dns-01 TXT records an interrupted run recorded but could not delete
    (``oeagent/ca/dns01.py``); a failure to do so is reported, and never fails this run."""
    if not (state.root / "dns01-pending.json").exists():
        return
    from oeagent.ca import dns01  # dnspython only when there is something to do

    try:
        dns01.remove_leftovers(config.challenge.dns, state, reporter)
    except OeagentError as exc:
        reporter.step("recover", f"could not remove the dns-01 TXT records an interrupted "
                      f"run left: {exc}", ok=False)


def load_or_create_key(
    config: Config, state: StateDir, reporter: Reporter, *, fresh: bool
) -> keys.PrivateKey:
    """The certificate key: reuse the stored one unless config asks otherwise."""
    stored = state.read_bytes(state.cert_key_path)
    if stored is not None and not fresh:
        key = keys.load_key_pem(stored, "certificate key")
        if keys.key_algorithm(key) == config.key.algorithm:
            reporter.step(
                "key",
                f"reusing certificate key ({config.key.algorithm})",
                spki_sha256=keys.spki_sha256(key),
            )
            return key
        reporter.step(
            "key",
            f"stored key is {keys.key_algorithm(key)}; config asks for {config.key.algorithm}",
        )
    key = keys.generate_key(config.key.algorithm)
    # Written before the order: a run interrupted after issuance still has the matching key.
    state.write_bytes(state.cert_key_path, keys.key_to_pem(key), PRIVATE_FILE)
    reporter.step(
        "key",
        f"generated a new {config.key.algorithm} certificate key",
        spki_sha256=keys.spki_sha256(key),
    )
    return key


def enroll(
    config: Config,
    reporter: Reporter,
    *,
    force: bool = False,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> EnrollResult:
    state = StateDir(config.state_dir)
    now = now or dt.datetime.now(dt.UTC)
    if dry_run:
        return _plan_only(config, state, reporter, force, now)
    with state.lock(config.lock_timeout):
        reporter.step("lock", f"holding the state lock in {state.root}")
        for stale in state.remove_stale_temp_files():
            reporter.step("recover", f"removed {stale.name}, left by an interrupted run")
        recover_interrupted_swap(config, state, reporter)
        recover_dns01_leftovers(config, state, reporter)
        current = certstore.load_current(state)
        stored_key_pem = state.read_bytes(state.cert_key_path)
        stored_key = (
            keys.load_key_pem(stored_key_pem, "certificate key") if stored_key_pem else None
        )
        decision = renewal.decide(config, current, stored_key, now)
        # After `unenroll --remove-nss` the operator asks again: deploy even if NSS still
        # holds the certificate (a removal killed halfway), and end the removal once done.
        removed = state.removed_path.exists()
        if not force and not decision.due and current is not None and stored_key is not None:
            if not removed and is_deployed(config, state, current):
                reporter.step(
                    "check",
                    f"nothing to do: certificate {current.serial_hex} is deployed "
                    f"and {decision.reason}",
                )
                return EnrollResult(False, decision.reason, current.summary())
            # Issued earlier but the deploy did not finish (or NSS was reset): deploy again.
            reporter.step(
                "check",
                f"certificate {current.serial_hex} is current but not deployed; deploying it",
            )
            result, ran = deploy_and_run_hooks(
                config, state, current, stored_key, reporter, event="enroll",
                previous_serial=None,
            )
            return EnrollResult(
                False, "deployed the existing certificate", current.summary(), result, hooks=ran,
                extra={"enrolled_again": _end_removal(state, reporter)},
            ).raise_for_hooks()

        reason = "forced with --force" if force and not decision.due else decision.reason
        reporter.step("check", f"a new certificate is needed: {reason}")
        check_database_access(config)  # a wrong NSS password stops us before the CA issues
        fresh_key = not config.key.reuse and current is not None
        key = load_or_create_key(config, state, reporter, fresh=fresh_key)

        from oeagent.ca import issue_certificate  # the ACME stack is only imported when used

        issued = issue_certificate(config, state, key, reporter)
        if not keys.same_key(issued.cert, key):
            raise StateError("the CA returned a certificate for a different key; not deploying it")
        stored = certstore.save(state, issued.cert, issued.chain)
        reporter.step(
            "store", f"kept certificate {stored.serial_hex} in {state.cert_dir(stored.serial_hex)}"
        )
        result, ran = deploy_and_run_hooks(
            config, state, stored, key, reporter, event="enroll",
            previous_serial=current.serial_hex if current else None,
        )
        return EnrollResult(True, reason, stored.summary(), result, hooks=ran,
                            extra={"enrolled_again": _end_removal(state, reporter)}
                            ).raise_for_hooks()


def _end_removal(state: StateDir, reporter: Reporter) -> bool:
    """The identity is in NSS again: renewals look after it from now on. True if this ended
    an ``unenroll --remove-nss``."""
    if not removal.clear(state):
        return False
    reporter.step("unenroll", "enrolled again: renewals keep the identity in NSS from now on")
    return True


def _plan_only(
    config: Config, state: StateDir, reporter: Reporter, force: bool, now: dt.datetime
) -> EnrollResult:
    """--dry-run: say what would happen from local state alone; contact nobody."""
    current = certstore.load_current(state) if state.root.exists() else None
    key_pem = state.read_bytes(state.cert_key_path) if state.root.exists() else None
    key = keys.load_key_pem(key_pem, "certificate key") if key_pem else None
    decision = renewal.decide(config, current, key, now)
    if decision.due or force:
        names = ", ".join([*config.host.names, *config.host.addresses])
        reporter.step(
            "plan",
            f"would request a certificate for {names} from {config.acme.directory} "
            f"using {config.challenge.type} ({decision.reason if decision.due else 'forced'})",
        )
        reporter.step(
            "plan",
            f"would load it into {config.nss.database} as '{config.nss.nickname}' and tell pluto",
        )
        return EnrollResult(
            False,
            decision.reason,
            current.summary() if current else None,
            dry_run=True,
            extra={"would_issue": True},
        )
    reporter.step("plan", f"nothing to do: {decision.reason}")
    return EnrollResult(
        False,
        decision.reason,
        current.summary() if current else None,
        dry_run=True,
        extra={"would_issue": False},
    )
