"""A damaged NSS swap journal (STATE/nss-work/nss-swap.json) is an NssError naming it; the
recovery that acts on it (purge, import, delete keys) never starts from a guess."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oeagent.errors import NssError
from oeagent.nss import journal

DATABASE = "sql:/var/lib/ipsec/nss"
GOOD: dict[str, Any] = {
    "version": journal.VERSION, "database": DATABASE, "nickname": "oeagent",
    "old_fingerprints": ["aa"], "old_key_ids": ["01"], "backup_p12": True,
    "new_fingerprint": "bb", "new_key_id": "02", "chain_fingerprints": ["cc"],
    "nicknames_before": ["oeagent"], "verify": True, "started": 1.0,
}


def read(tmp_path: Path, document: object) -> dict[str, Any] | None:
    (tmp_path / journal.JOURNAL).write_text(json.dumps(document))
    return journal.read(SimpleNamespace(database=DATABASE), tmp_path)  # type: ignore[arg-type]


def test_a_good_journal_is_read(tmp_path: Path) -> None:
    assert read(tmp_path, GOOD) == GOOD


@pytest.mark.parametrize(("document", "what"), [
    ([], "not a JSON object"),
    (None, "not a JSON object"),
    ({**GOOD, "nickname": 5}, "nickname"),
    ({k: v for k, v in GOOD.items() if k != "old_key_ids"}, "old_key_ids"),
    ({**GOOD, "old_fingerprints": "aa"}, "old_fingerprints"),
    ({**GOOD, "chain_fingerprints": [1]}, "chain_fingerprints"),
    ({**GOOD, "backup_p12": "yes"}, "backup_p12"),
    ({**GOOD, "new_key_id": None}, "new_key_id"),
])
def test_a_damaged_journal_is_an_nss_error(tmp_path: Path, document: object, what: str) -> None:
    # [] or null raised AttributeError (exit 70); a missing field KeyError in the middle of
    # a recovery that had already purged the nickname.
    with pytest.raises(NssError) as info:
        read(tmp_path, document)
    assert str(tmp_path / journal.JOURNAL) in str(info.value) and what in str(info.value)
