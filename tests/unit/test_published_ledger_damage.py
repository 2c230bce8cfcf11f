"""STATE/published.json damaged: one StateError naming the file and the field, never exit 70
(unenrolled_at was parsed only where it was used: TypeError, ValueError, or an aware/naive
comparison). Never a silent default either: a lost unenrolled_at would advertise an
unenrolled host again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oeagent.errors import StateError
from oeagent.publish.advertise import Ledger
from oeagent.state import StateDir


def load(tmp_path: Path, document: object) -> Ledger:
    (tmp_path / "published.json").write_text(json.dumps(document))
    return Ledger.load(StateDir(tmp_path))


def test_a_good_ledger_loads(tmp_path: Path) -> None:
    ledger = load(tmp_path, {"pins": {"ab" * 32: "2026-12-01T00:00:00+00:00"},
                             "unenrolled_at": "2026-12-02T00:00:00+00:00", "purged": False,
                             "auth": "ecdsa"})
    assert ledger.unenrolled_time() is not None and ledger.auth == "ecdsa"
    assert load(tmp_path, {}).unenrolled_at is None


@pytest.mark.parametrize(("document", "field"), [
    ({"unenrolled_at": 5}, "unenrolled_at"),
    ({"unenrolled_at": "garbage"}, "unenrolled_at"),
    ({"unenrolled_at": "2026-12-02T00:00:00"}, "unenrolled_at"),
    ({"pins": {"ab": 5}}, "pins"),
    ({"pins": {"ab": "yesterday"}}, "pins"),
])
def test_a_damaged_ledger_is_a_state_error(tmp_path: Path, document: object,
                                           field: str) -> None:
    with pytest.raises(StateError) as info:
        load(tmp_path, document)
    assert "published.json" in str(info.value) and field in str(info.value)
