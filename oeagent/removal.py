"""The record that ``oeagent unenroll --remove-nss`` took this host's identity out of NSS.

Without it the next renewal check (the agent's, or the timer's ``oeagent renew``) would see a
current certificate that is "not deployed" and load it into NSS again, or, after
``--revoke`` left no current certificate, order a new one: an unenroll would undo itself
within hours. So ``renew`` leaves a removed identity alone, ``status`` says the host is
unenrolled, and only ``oeagent enroll`` (the operator asking again) ends it.

``STATE/removed.json`` is written *before* NSS is touched, so a run killed halfway still
counts as removed and a rerun of ``unenroll`` finishes the job.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from oeagent.errors import StateError
from oeagent.state import StateDir, read_time


@dataclass(frozen=True)
class Removal:
    at: dt.datetime
    """When ``unenroll --remove-nss`` (or ``--revoke``) ran first."""
    revoked: bool
    """Whether the certificate was also revoked at the CA."""

    def explain(self) -> str:
        what = "removed from NSS and revoked" if self.revoked else "removed from NSS"
        return (f"the identity was {what} by `oeagent unenroll` at "
                f"{self.at.isoformat(timespec='seconds')}; `oeagent enroll` enrolls this "
                "host again")


def load(state: StateDir) -> Removal | None:
    """The removal on record, or None. A damaged record is an error, never "not removed":
    reading it as absent would put the identity back into NSS."""
    if not state.root.exists():
        return None
    text = state.read_bytes(state.removed_path)
    if text is None:
        return None
    try:
        raw = json.loads(text)
        at = read_time(raw["at"])
        revoked = raw.get("revoked", False)
        if at is None or not isinstance(revoked, bool):
            raise ValueError("it needs a time with its UTC offset and a true/false 'revoked'")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(state, f"{state.removed_path} is damaged ({exc})") from None
    return Removal(at, revoked)


def _damaged(state: StateDir, why: str) -> StateError:
    return StateError(f"{why}. It records that `oeagent unenroll` removed this host's "
                      "identity from NSS: run `oeagent unenroll --remove-nss` again to keep "
                      "it removed, or `oeagent enroll` to enroll again")


def record(state: StateDir, now: dt.datetime, *, revoked: bool = False) -> Removal:
    """Record the removal (keeping the first time it happened); returns what is on record."""
    try:
        earlier = load(state)
    except StateError:
        earlier = None  # damaged: this run writes it again, which is what its message asks for
    removal = Removal(earlier.at if earlier else now, revoked or bool(earlier and earlier.revoked))
    state.write_json(state.removed_path, {"at": removal.at.isoformat(),
                                          "revoked": removal.revoked})
    return removal


def clear(state: StateDir) -> bool:
    """End the removal (``enroll`` deployed the identity again); True if one was on record."""
    try:
        state.removed_path.unlink()
    except FileNotFoundError:
        return False
    return True
