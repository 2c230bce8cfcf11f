"""Files that remember DNS records oeagent added -- dns01-pending.json (challenge TXT records
to delete) and published/rfc2136.json (what the publisher owns) -- damaged: the damaged
entries are passed over with a warning, as an unreadable file already was; never a
KeyError or a dnspython exception out of the CLI (exit 70)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import dns.name
import pytest

from oeagent.ca import dns01
from oeagent.publish.rfc2136 import Rfc2136Backend

GOOD_PENDING = {"zone": "example.org.", "records": {"_acme-challenge.a.example.org.": ['"t"']}}


@pytest.mark.parametrize("entry", [
    {"records": {"_acme-challenge.a.example.org.": ['"t"']}},        # no zone
    {"zone": "a" * 64 + ".org.", "records": {}},                      # not a name
    {"zone": "example.org.", "records": {"a..example.org.": ['"t"']}},
    {"zone": "example.org.", "records": {"a.example.org.": ['"unterminated']}},
    5,
])
def test_damaged_pending_entries_are_passed_over(entry: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        added = dns01._recall({"zones": [entry, GOOD_PENDING]})
    assert [zone for zone, _ in added] == [dns.name.from_text("example.org.")]
    assert "damaged" in caplog.text



@pytest.mark.parametrize("document", [
    [], {"rrsets": 5}, {"rrsets": [5]}, {"rrsets": [{"name": "a.example.org."}]},
    {"rrsets": [{"name": "a..b", "type": "TXT", "values": []}]},
    {"rrsets": [{"name": "a.example.org.", "type": "NOPE", "values": []}]},
    {"rrsets": [{"name": "a.example.org.", "type": "TXT", "values": 5}]},
    {"rrsets": [{"name": "a.example.org.", "type": 16, "values": []}]},
])
def test_damaged_publisher_memory_is_passed_over(tmp_path: Path, document: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    memory = tmp_path / "rfc2136.json"
    good = {"name": "b.example.org.", "type": "TXT", "values": ['"v"']}
    if isinstance(document, dict) and isinstance(document.get("rrsets"), list):
        document = {"rrsets": [*document["rrsets"], good]}
    memory.write_text(json.dumps(document))
    target = Rfc2136Backend.__new__(Rfc2136Backend)
    target.memory = memory
    with caplog.at_level(logging.WARNING):
        remembered = target._remembered()
    assert "damaged" in caplog.text or "ignoring" in caplog.text
    assert set(remembered) <= {(dns.name.from_text("b.example.org."), 16)}
