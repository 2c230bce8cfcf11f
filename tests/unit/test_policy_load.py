"""``install.load`` against a fake pluto: how many processes a load of many peers costs.

The policy benchmark (bench/policy_scale.py) found loads of N peers running N ``whack
--status`` (each listing N conns), one ``whack --delete`` and one ``whack --route`` per conn;
these pin the fix: two status dumps and no deletes of conns pluto never held, whatever the
number of peers.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from oeagent import libreswan
from oeagent.errors import OeagentError
from oeagent.policy import install


def _conf(count: int, changed: int = -1) -> str:
    return "".join(
        f"conn oeagent-peer-p{i}-0\n\tright=198.18.0.{i}\n\trightid=@p{i}.oe.test\n"
        f"\tauto=ondemand\n\tfailureshunt={'passthrough' if i == changed else 'drop'}\n\n"
        for i in range(count))


class FakePluto:
    def __init__(self) -> None:
        self.held: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.added: list[list[str]] = []
        self.routed: list[str] = []
        self.lock = threading.Lock()

    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        with self.lock:  # routes run a few at a time
            return self._run(list(argv))

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        verb = next(a for a in args[2:] if a.startswith("--") and a != "--ctlsocket")
        self.calls[f"{args[1]} {verb}"] += 1
        out = ""
        if verb == "--status":
            out = "".join(f'000 "{n}": 0.0.0.0/0===...; unrouted\n' for n in sorted(self.held))
            out += '000 "oeagent-private-or-clear#198.51.100.0/24": ...\n'
        elif verb == "--route":
            self.routed.append(args[args.index("--name") + 1])
        elif verb == "--delete":
            self.held.discard(args[args.index("--name") + 1])
        elif args[1] == "addconn":
            names = args[args.index("--config") + 2:]
            self.added.append(names)
            self.held |= set(names)
        return subprocess.CompletedProcess(args, 0, out, "")


@pytest.fixture
def pluto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePluto:
    fake = FakePluto()
    monkeypatch.setattr(install.proc, "run", fake.run)
    # The fake reads argv as ``ipsec PROGRAM ...`` (no ``ipsec --directory`` to answer).
    monkeypatch.setattr(install.libreswan, "command", lambda program: ["ipsec", program])
    return fake


def test_held_conns_reads_names_instances_and_groups() -> None:
    status = ('000 "a": 10.0.0.1/32===...\n000 "b"[1] 198.51.100.2 #3: ...\n'
              '000 "oeagent-private-or-clear#198.51.100.0/24": ...\n')
    assert libreswan.held_conns(status) == {"a", "b", "oeagent-private-or-clear"}


def test_loading_many_peers_costs_a_constant_number_of_processes(
        pluto: FakePluto, tmp_path: Path) -> None:
    (tmp_path / "oeagent.conf").write_text(_conf(500))
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(500))
    # Two status dumps (not one per conn), no deletes of conns pluto never held, one addconn;
    # the on-demand traps are routed one whack each.
    assert pluto.calls == Counter({"whack --status": 2, "addconn --config": 1,
                                   "whack --route": 500, "whack --listen": 1})
    assert len(pluto.held) == 500
    assert sorted(pluto.routed) == sorted(pluto.held)


def test_reload_replaces_only_the_changed_conn(pluto: FakePluto, tmp_path: Path) -> None:
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(300))
    pluto.calls.clear()
    install.load(tmp_path / "pluto.ctl", tmp_path, _conf(300), _conf(300, changed=7))
    # No delete of the changed conn: addconn replaces it in one whack message, so pluto
    # never lacks its definition.
    assert pluto.calls == Counter({"whack --status": 2, "addconn --config": 1,
                                   "whack --route": 1, "whack --listen": 1})
    assert pluto.added[-1] == ["oeagent-peer-p7-0"]


def test_a_removed_conn_is_deleted_and_nothing_else(pluto: FakePluto, tmp_path: Path) -> None:
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(300))
    pluto.calls.clear()
    install.load(tmp_path / "pluto.ctl", tmp_path, _conf(300), _conf(299))
    assert pluto.calls == Counter({"whack --status": 2, "whack --delete": 1,
                                   "whack --listen": 1})
    assert "oeagent-peer-p299-0" not in pluto.held and len(pluto.held) == 299


def test_a_route_that_times_out_stops_the_load(pluto: FakePluto, tmp_path: Path) -> None:
    real = pluto._run

    def stuck(args: list[str]) -> subprocess.CompletedProcess[str]:
        if "--route" in args and args[-1] == "oeagent-peer-p3-0":
            raise OeagentError("whack did not finish within 60 s")
        return real(args)

    pluto._run = stuck  # type: ignore[method-assign]
    with pytest.raises(OeagentError, match="did not finish"):
        install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(500))
    # The routes still queued were not run, and pluto was not asked to reread the groups
    # (the caller restores the previous policy next).
    assert pluto.calls["whack --route"] < 100
    assert pluto.calls["whack --listen"] == 0


def test_what_pluto_said_while_routing_stays_in_order(pluto: FakePluto, tmp_path: Path) -> None:
    real = pluto._run

    def chatty(args: list[str]) -> subprocess.CompletedProcess[str]:
        done = real(args)
        if "--route" in args:
            return subprocess.CompletedProcess(args, 0, f"routed {args[-1]}\n", "")
        return done

    pluto._run = chatty  # type: ignore[method-assign]
    output = install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(50))
    assert [line for line in output.splitlines() if line] == [
        f"routed oeagent-peer-p{i}-0" for i in range(50)]
