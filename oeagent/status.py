"""``oeagent status``: what is enrolled, whether it is deployed and loaded, when it renews.

Read-only and local (no CA contact, no lock: it must answer while the agent holds the lock).
Healthy means: a certificate exists and is not within its renewal margin without a renewal
under way, the last attempt did not fail, NSS holds exactly this certificate and verifies it.
Anything else is listed under ``attention`` and makes the command exit 1.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from typing import Any

from oeagent import (
    certstore,
    keyroll,
    keys,
    libreswan,
    proc,
    removal,
    renewal,
    renewstate,
)
from oeagent.config import Config
from oeagent.deploy import open_database
from oeagent.errors import NssError, OeagentError, StateError
from oeagent.renew import next_check
from oeagent.state import StateDir


class NeedsAttention(OeagentError):
    """Status found something to fix; the report is still printed."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


def _pluto(config: Config, cert: certstore.StoredCertificate | None) -> dict[str, Any]:
    sock = config.pluto.ctlsocket
    try:
        if not stat.S_ISSOCK(sock.stat().st_mode):
            return {"reachable": False, "detail": f"{sock} is not a socket"}
    except OSError:
        return {"reachable": False, "detail": f"pluto is not running (no {sock})"}
    try:
        done = proc.run(libreswan.whack("--ctlsocket", str(sock), "--listcerts"),
                        check=False, timeout=10)
    except OeagentError as exc:
        return {"reachable": False, "detail": str(exc)}
    if done.returncode != 0:
        return {"reachable": False, "detail": (done.stderr or done.stdout).strip()[-200:]}
    # pluto lists the end certificates it has, by nickname, with their serial numbers.
    found = re.search(rf'End certificate "{re.escape(config.nss.nickname)}" - SN: 0x([0-9a-fA-F]+)',
                      done.stdout)
    serial = format(int(found.group(1), 16), "x") if found else None
    exact = cert is not None and serial == cert.serial_hex
    detail = ("pluto has this certificate loaded" if exact else
              f"pluto has certificate {serial}, not the current one" if serial else
              f"pluto has no certificate '{config.nss.nickname}'")
    return {"reachable": True, "has_certificate": exact, "serial": serial, "detail": detail}


def collect(config: Config, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    state = StateDir(config.state_dir)
    attention: list[str] = []
    current = certstore.load_current(state) if state.root.exists() else None
    key_pem = state.read_bytes(state.cert_key_path) if state.root.exists() else None
    key = keys.load_key_pem(key_pem, "certificate key") if key_pem else None
    record = renewstate.load(state)
    report: dict[str, Any] = {"attention": attention, "state_dir": str(state.root)}
    attention += _exposed_keys(state)
    try:
        removed = removal.load(state)
    except StateError as exc:
        attention.append(str(exc))
        removed = None
    if removed is not None:
        # Out of NSS on purpose: nothing to renew, deploy or load, so nothing needs attention.
        report["certificate"] = None
        report["unenrolled"] = {"at": _iso(removed.at), "revoked": removed.revoked,
                                "kept_certificate": current.serial_hex if current else None,
                                "detail": removed.explain()}
        return report
    if current is None:
        attention.append("no certificate enrolled yet (run oeagent enroll)")
        report["certificate"] = None
        return report
    scheduled = record.for_serial(current.serial_hex)
    decision = renewal.decide(config, current, key, now, scheduled)
    report["certificate"] = {
        **current.summary(),
        "issuer": current.cert.issuer.rfc4514_string(),
        "expired": now >= current.not_after,
    }
    backing_off = bool(record.failures and record.next_attempt and record.next_attempt > now)
    why = {"ari": "the CA's ARI window", "fallback": "the lifetime rule with jitter",
           "rule": "the lifetime rule", "hard": decision.reason}[decision.source]
    report["renewal"] = {
        "due": decision.due,
        "reason": decision.reason,
        "next_time": _iso(next_check(config, scheduled, decision, now)),
        "renew_after": _iso(decision.renew_after),
        "why": f"backoff after {record.failures} failure(s)" if backing_off else why,
        "ari_window": ({"start": _iso(scheduled.ari.start), "end": _iso(scheduled.ari.end),
                        "explanation_url": scheduled.ari.explanation_url}
                       if scheduled.ari else None),
        "failures": record.failures,
        "last_success": _event(record.last_success),
        "last_failure": _event(record.last_failure),
        "will_lapse": renewal.will_lapse(record, current),
    }
    if now >= current.not_after:
        attention.append(f"the certificate expired at {_iso(current.not_after)}")
    elif decision.due:
        attention.append(f"renewal is due and not done: {decision.reason}")
    if record.failures:
        reason = record.last_failure.reason if record.last_failure else "unknown"
        attention.append(f"the last renewal attempt failed: {reason}")
    if renewal.will_lapse(record, current):
        attention.append("the certificate will lapse before the next attempt")
    report["nss"] = _nss(config, current, attention)
    report["pluto"] = _pluto(config, current)
    if report["pluto"]["reachable"] and not report["pluto"]["has_certificate"]:
        attention.append(report["pluto"]["detail"])
    cur, nxt = keyroll.current_and_next_keys(state, now)
    report["keys"] = {"current": cur.as_dict() if cur else None,
                      "next": nxt.as_dict() if nxt else None}
    return report


def _exposed_keys(state: StateDir) -> list[str]:
    """Private keys in the state directory that group or others can read. oeagent writes
    them 0600 and never loosens a mode, but one restored from a backup or copied by hand
    keeps the mode it came with, and a key other local users could read is no secret."""
    found = []
    candidates = [*state.cert_key_path.parent.glob("*.pem"),
                  *state.accounts_root.glob("*/key.pem")]
    for path in sorted(candidates):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found.append(f"{path} holds a private key readable by group or others "
                         f"(mode {mode:04o}); run: chmod 600 {path}")
    return found


def _event(event: renewstate.Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"at": _iso(event.at), "serial": event.serial, "reason": event.reason,
            "code": event.code}


def _nss(config: Config, cert: certstore.StoredCertificate,
         attention: list[str]) -> dict[str, Any]:
    db = open_database(config)
    if not db.exists():
        attention.append(f"the NSS database {config.nss.database} does not exist")
        return {"database": config.nss.database, "exact": False, "verified": False}
    fingerprints = db.fingerprints(config.nss.nickname)
    exact = fingerprints == [cert.fingerprint_sha256]
    verified = True
    try:
        db.verify(config.nss.nickname)
    except NssError:
        verified = False
    if not exact:
        attention.append(f"NSS holds {len(fingerprints)} certificate(s) under "
                         f"'{config.nss.nickname}', not exactly the current one")
    elif not verified:
        attention.append(f"certutil -V does not accept '{config.nss.nickname}'")
    return {"database": config.nss.database, "nickname": config.nss.nickname,
            "exact": exact, "verified": verified, "count": len(fingerprints)}


def render_text(report: dict[str, Any]) -> str:
    lines = []
    if report.get("unenrolled"):
        lines.append(f"unenrolled   {report['unenrolled']['detail']}")
    cert = report.get("certificate")
    if cert:
        names = ", ".join([*cert["names"], *cert["addresses"]])
        lines += [f"certificate  {names}", f"  serial     {cert['serial']}",
                  f"  issuer     {cert['issuer']}", f"  not after  {cert['not_after']}"]
        ren = report["renewal"]
        lines.append(f"renewal      next {ren['next_time']} ({ren['why']}); {ren['reason']}")
        for label in ("last_success", "last_failure"):
            event = ren[label]
            if event:
                extra = f": {event['reason']}" if event.get("reason") else ""
                lines.append(f"  {label.replace('_', ' ')}  {event['at']}{extra}")
        nss = report["nss"]
        lines.append(f"nss          {nss['database']}: "
                     f"{'exactly this certificate' if nss['exact'] else 'MISMATCH'}, "
                     f"{'verifies' if nss['verified'] else 'does NOT verify'}")
        lines.append(f"pluto        {report['pluto']['detail']}")
        nxt = report["keys"]["next"]
        if nxt:
            lines.append(f"next key     {nxt['spki_sha256']} (since {nxt['created_at']})")
    lines += ([f"ATTENTION    {item}" for item in report["attention"]]
              or ([] if report.get("unenrolled") else ["healthy"]))
    return "\n".join(lines) + "\n"
