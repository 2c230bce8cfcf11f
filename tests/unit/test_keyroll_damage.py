"""STATE/keys/keys.json with times that have no zone (damaged, or written by hand): read as
absent, like any other damage there, never compared with an aware time later (TypeError out
of renew, exit 70)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from oeagent import config, keyroll, keys
from oeagent.report import NullReporter
from oeagent.state import StateDir

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def test_times_without_a_zone_are_read_as_absent(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    current, upcoming = keys.generate_key("ecdsa-p256"), keys.generate_key("ecdsa-p256")
    state.write_bytes(state.cert_key_path, keys.key_to_pem(current))
    state.write_bytes(keyroll.next_key_path(state), keys.key_to_pem(upcoming))
    naive = "2026-11-01T00:00:00"
    (state.cert_key_path.parent / "keys.json").write_text(json.dumps({
        "current": {"spki_sha256": keys.spki_sha256(current), "created_at": naive,
                    "current_since": naive},
        "next": {"spki_sha256": keys.spki_sha256(upcoming), "created_at": naive,
                 "announced_at": naive}}))
    now_info, next_info = keyroll.current_and_next_keys(state, NOW)
    assert now_info is not None and next_info is not None
    for when in (now_info.created_at, now_info.current_since, next_info.announced_since()):
        assert when is None or when.tzinfo is not None
    cfg = config.parse({"host": {"names": ["a.example.org"]},
                        "rollover": {"key_lifetime": "90d", "announce": "2d"}}, tmp_path)
    keyroll.switch_ready(cfg, state, NOW)  # compared with aware times: must not raise
    keyroll.prepare(cfg, state, NullReporter(), NOW)
