"""What renewal remembers between runs: ``STATE/renewal.json``.

A restart must not forget the CA's answer (the ARI window, the time chosen in it, when to
ask again) nor a failure streak (the backoff, a rate limit's Retry-After): forgetting the
first re-rolls the random time at every restart, forgetting the second hammers the CA.
The record is tied to one certificate serial; a new certificate starts a fresh schedule but
keeps the history (last success, last failure) that ``status`` shows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oeagent.state import StateDir

FILENAME = "renewal.json"


def record_path(state: StateDir) -> Path:
    return state.root / FILENAME


@dataclass(frozen=True)
class AriRecord:
    start: dt.datetime
    end: dt.datetime
    chosen: dt.datetime
    """The random time picked inside [start, end]; kept while the window stays the same."""
    next_check: dt.datetime
    fetched_at: dt.datetime
    explanation_url: str | None = None


@dataclass(frozen=True)
class Event:
    at: dt.datetime
    serial: str | None = None
    reason: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class RenewalRecord:
    serial: str | None = None
    """The certificate this schedule is about."""
    fallback_at: dt.datetime | None = None
    """Without ARI: the jittered time from the lifetime rule, fixed once per certificate."""
    ari: AriRecord | None = None
    failures: int = 0
    """Failed attempts since the last success."""
    next_attempt: dt.datetime | None = None
    """After a failure: not before this time (backoff or the CA's Retry-After)."""
    last_success: Event | None = None
    last_failure: Event | None = None
    ca_offers_ari: bool | None = None
    """Whether the CA's directory had renewalInfo when last asked."""
    extra: dict[str, Any] = field(default_factory=dict)

    def for_serial(self, serial: str | None) -> RenewalRecord:
        """This record, with the per-certificate schedule reset if ``serial`` is another cert."""
        if serial == self.serial:
            return self
        return dataclasses.replace(self, serial=serial, fallback_at=None, ari=None)

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = _encode(dataclasses.asdict(self))
        encoded.pop("extra", None)
        return encoded


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _event(value: Any) -> Event | None:
    if not isinstance(value, dict) or _when(value.get("at")) is None:
        return None
    at = _when(value["at"])
    assert at is not None
    return Event(at, value.get("serial"), value.get("reason"), value.get("code"))


def _ari(value: Any) -> AriRecord | None:
    if not isinstance(value, dict):
        return None
    times = [_when(value.get(k)) for k in ("start", "end", "chosen", "next_check", "fetched_at")]
    if any(t is None for t in times):
        return None  # a damaged record only costs one more renewalInfo request
    start, end, chosen, next_check, fetched_at = times
    assert start and end and chosen and next_check and fetched_at
    url = value.get("explanation_url")
    return AriRecord(start, end, chosen, next_check, fetched_at,
                     url if isinstance(url, str) else None)


def load(state: StateDir) -> RenewalRecord:
    """The stored record, or an empty one. A damaged file is not fatal: schedule afresh."""
    try:
        data = state.read_json(record_path(state)) or {}
    except Exception:  # noqa: BLE001 - any damage means "no memory", never "cannot renew"
        data = {}
    failures = data.get("failures")
    return RenewalRecord(
        serial=data.get("serial") if isinstance(data.get("serial"), str) else None,
        fallback_at=_when(data.get("fallback_at")),
        ari=_ari(data.get("ari")),
        failures=failures if isinstance(failures, int) and failures >= 0 else 0,
        next_attempt=_when(data.get("next_attempt")),
        last_success=_event(data.get("last_success")),
        last_failure=_event(data.get("last_failure")),
        ca_offers_ari=data.get("ca_offers_ari") if isinstance(data.get("ca_offers_ari"), bool)
        else None,
    )


def save(state: StateDir, record: RenewalRecord) -> None:
    state.write_json(record_path(state), record.to_json())
