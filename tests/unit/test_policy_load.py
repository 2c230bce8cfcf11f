"""``install.load`` against a fake pluto: how many processes a load of many peers costs.

The policy benchmark (bench/policy_scale.py) found loads of N peers running N ``whack
--status`` (each listing N conns), one ``whack --delete`` and one ``whack --route`` per conn;
these pin the fix: two status dumps and no deletes of conns pluto never held, whatever the
number of peers.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

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

    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        verb = next(a for a in args[2:] if a.startswith("--") and a != "--ctlsocket")
        self.calls[f"{args[1]} {verb}"] += 1
        out = ""
        if verb == "--status":
            out = "".join(f'000 "{n}": 0.0.0.0/0===...; unrouted\n' for n in sorted(self.held))
            out += '000 "oeagent-private-or-clear#198.51.100.0/24": ...\n'
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
    assert install.held_conns(status) == {"a", "b", "oeagent-private-or-clear"}


def test_loading_many_peers_costs_a_constant_number_of_processes(
        pluto: FakePluto, tmp_path: Path) -> None:
    (tmp_path / "oeagent.conf").write_text(_conf(500))
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(500))
    # Two status dumps (not one per conn), no deletes of conns pluto never held, one addconn;
    # the on-demand traps are routed one whack each.
    assert pluto.calls == Counter({"whack --status": 2, "addconn --config": 1,
                                   "whack --route": 500, "whack --listen": 1})
    assert len(pluto.held) == 500


def test_reload_replaces_only_the_changed_conn(pluto: FakePluto, tmp_path: Path) -> None:
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(300))
    pluto.calls.clear()
    install.load(tmp_path / "pluto.ctl", tmp_path, _conf(300), _conf(300, changed=7))
    assert pluto.calls == Counter({"whack --status": 2, "whack --delete": 1,
                                   "addconn --config": 1, "whack --route": 1,
                                   "whack --listen": 1})
    assert pluto.added[-1] == ["oeagent-peer-p7-0"]
