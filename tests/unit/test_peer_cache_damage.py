"""A damaged STATE/peers.json: one clear StateError naming the file and what is wrong
(exit 1 through the CLI), never an internal error, and never a silent fresh start (the file
is what holds peers to their advertisements)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oeagent.advertisement import Advertisement
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.entries import Decision, Entry
from oeagent.errors import StateError
from oeagent.state import StateDir

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


def good_entry() -> dict[str, Any]:
    ad = Advertisement("db.example.org", "ecdsa", ("ab" * 32,), addresses=("192.0.2.5",))
    decision = Decision("db.example.org", "db.example.org", ad, NOW + dt.timedelta(hours=1),
                        ("192.0.2.5",), "dns", {"192.0.2.5": NOW})
    return Entry(decision, "authenticated", NOW, (), held=False, obtained_at=NOW).to_json()


def write(tmp_path: Path, document: object) -> StateDir:
    state = StateDir(tmp_path)
    (tmp_path / "peers.json").write_text(json.dumps(document))
    return state


def test_a_good_file_loads(tmp_path: Path) -> None:
    cache = PeerCache(write(tmp_path, {"version": 1, "peers": {"db.example.org": good_entry()}}))
    assert cache.decisions(NOW)[0].authenticated


def damaged_entry(**changes: Any) -> dict[str, Any]:
    entry = good_entry()
    for key, value in changes.items():
        if value is KeyError:
            del entry[key]
        else:
            entry[key] = value
    return {"version": 1, "peers": {"db.example.org": entry}}


def damaged_advertisement(**changes: Any) -> dict[str, Any]:
    entry = good_entry()
    entry["advertisement"] = {**entry["advertisement"], **changes}
    return {"version": 1, "peers": {"db.example.org": entry}}


@pytest.mark.parametrize(("document", "what"), [
    ({"version": 1, "peers": 5}, "peers"),
    ({"version": 1, "peers": ["db.example.org"]}, "peers"),
    ({"version": 1, "peers": {"db.example.org": 5}}, "db.example.org"),
    (damaged_entry(peer=KeyError), "peer"),
    (damaged_entry(last_status=KeyError), "last_status"),
    (damaged_entry(checked_at=5), "checked_at"),
    (damaged_entry(checked_at="yesterday"), "checked_at"),
    # A time without a zone would compare with an aware one later, deep in the policy.
    (damaged_entry(held_until="2026-12-04T13:00:00"), "held_until"),
    (damaged_entry(addresses="192.0.2.5"), "addresses"),
    (damaged_entry(addresses=[5]), "addresses"),
    (damaged_entry(since=["192.0.2.5"]), "since"),
    (damaged_entry(reasons=5), "reasons"),
    (damaged_entry(advertisement=[1]), "advertisement"),
    (damaged_advertisement(pins=5), "pins"),
    (damaged_advertisement(ike_ports=["500"]), "ike_ports"),
    (damaged_advertisement(colour="red"), "advertisement"),
    (damaged_advertisement(mode=None), "mode"),
    ({"version": 1, "peers": {}, "installed": 5}, "installed"),
    ({"version": 1, "peers": {}, "installed_policy": 5}, "installed_policy"),
])
def test_damaged_file_is_a_state_error(tmp_path: Path, document: object, what: str) -> None:
    with pytest.raises(StateError) as info:
        PeerCache(write(tmp_path, document))
    message = str(info.value)
    assert str(tmp_path / "peers.json") in message and what in message, message


def test_cli_discover_with_damaged_file_exits_1_with_one_json_object(tmp_path: Path) -> None:
    config = tmp_path / "oeagent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n')
    (tmp_path / "state").mkdir(mode=0o700)
    write(tmp_path / "state", {"peers": {"db.example.org": 5}})
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", "discover",
         "db.example.org"],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is False and "peers.json" in document["error"]
    assert "internal error" not in document["error"] and "Traceback" not in proc.stderr


def test_refused_peer_names_are_not_kept(tmp_path: Path) -> None:
    """A line of --from-file that is no name or address is reported as invalid, but not kept
    in peers.json: nothing holds it to anything, and the agent would look it up again every
    min_cache forever (a 50 MB line made peers.json 150 MB)."""
    config = tmp_path / "oeagent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n')
    peers = tmp_path / "peers.txt"
    peers.write_text("$(id).example.org\n" + "x" * 300 + ".example.org\nfe80::1%eth0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", "discover",
         "--from-file", str(peers)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["status"] for r in rows[:-1]] == ["invalid"] * 3 and rows[-1]["peers"] == 3
    stored = json.loads((tmp_path / "state" / "peers.json").read_text())
    assert stored["peers"] == {}


def test_a_refused_name_left_by_an_older_version_is_dropped(tmp_path: Path) -> None:
    from oeagent.discovery.lookup import Result

    entry = {**good_entry(), "peer": "$(id).example.org", "fqdn": None, "advertisement": None,
             "addresses": [], "since": {}, "last_status": "invalid"}
    cache = PeerCache(write(tmp_path, {"version": 1, "peers": {"$(id).example.org": entry}}))
    cache.update(Result("$(id).example.org", status="invalid", refused=True), NOW)
    assert cache.entries == {}
