"""STATE/removed.json: what ``unenroll --remove-nss`` leaves for renewals to respect."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from oeagent import removal
from oeagent.errors import StateError
from oeagent.state import StateDir

FIRST = dt.datetime(2026, 12, 4, 17, 0, tzinfo=dt.UTC)


def test_record_keeps_the_first_time_and_remembers_a_revoke(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert removal.load(state) is None
    removal.record(state, FIRST)
    removal.record(state, FIRST + dt.timedelta(hours=1), revoked=True)
    removal.record(state, FIRST + dt.timedelta(hours=2))  # a later plain rerun
    assert removal.load(state) == removal.Removal(FIRST, revoked=True)
    assert (state.removed_path.stat().st_mode & 0o777) == 0o600
    assert "removed from NSS and revoked by `oeagent unenroll` at 2026-12-04T17:00:00" in (
        removal.load(state).explain())  # type: ignore[union-attr]
    assert removal.clear(state) is True and removal.load(state) is None
    assert removal.clear(state) is False


@pytest.mark.parametrize("content", [
    b"{", b"[]", b'{"revoked": false}', b'{"at": "yesterday"}',
    b'{"at": "2026-12-04T17:00:00"}',  # no UTC offset
    b'{"at": "2026-12-04T17:00:00+00:00", "revoked": "no"}',
])
def test_a_damaged_record_is_an_error_not_absent(tmp_path: Path, content: bytes) -> None:
    # Reading it as "not removed" would let the next renewal put the identity back.
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.removed_path.write_bytes(content)
    with pytest.raises(StateError, match=r"removed\.json is damaged .*unenroll --remove-nss"):
        removal.load(state)
    # ... and rerunning unenroll, as the message says, writes it again.
    assert removal.record(state, FIRST) == removal.Removal(FIRST, revoked=False)
    assert removal.load(state) == removal.Removal(FIRST, revoked=False)
