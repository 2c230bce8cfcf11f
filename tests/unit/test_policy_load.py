"""``install.load`` against a fake pluto: how many processes a load of many peers costs.

The policy benchmark (bench/policy_scale.py) found loads of N peers running N ``whack
--status`` (each listing N conns), one ``whack --delete`` and one ``whack --route`` per conn;
these pin the fix: a constant number of processes, whatever the number of peers.
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
        f"conn oeagent-peer-p{i}-0\n\tright=10.200.0.{i}\n\trightid=@p{i}.oe.test\n"
        f"\tauto=ondemand\n\tfailureshunt={'passthrough' if i == changed else 'drop'}\n\n"
        for i in range(count))


class FakePluto:
    def __init__(self) -> None:
        self.held: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.autoall_confs: list[str] = []

    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        verb = next(a for a in args[2:] if a.startswith("--") and a != "--ctlsocket")
        self.calls[f"{args[1]} {'--autoall' if '--autoall' in args else verb}"] += 1
        out = ""
        if verb == "--status":
            out = "".join(f'000 "{n}": 0.0.0.0/0===...; unrouted\n' for n in sorted(self.held))
            out += '000 "oeagent-private-or-clear#198.51.100.0/24": ...\n'
        elif verb == "--delete":
            self.held.discard(args[args.index("--name") + 1])
        elif args[1] == "addconn" and "--autoall" in args:
            wrapper = Path(args[args.index("--config") + 1])
            conf = wrapper.read_text().split("include ", 1)[1].strip()
            text = Path(conf).read_text()
            self.autoall_confs.append(text)
            self.held |= {line.split()[1] for line in text.splitlines()
                          if line.startswith("conn ")}
        return subprocess.CompletedProcess(args, 0, out, "")


@pytest.fixture
def pluto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePluto:
    fake = FakePluto()
    monkeypatch.setattr(install.proc, "run", fake.run)
    return fake


def test_held_conns_reads_names_instances_and_groups() -> None:
    status = ('000 "a": 10.0.0.1/32===...\n000 "b"[1] 198.51.100.2 #3: ...\n'
              '000 "oeagent-private-or-clear#198.51.100.0/24": ...\n')
    assert install.held_conns(status) == {"a", "b", "oeagent-private-or-clear"}


def test_loading_many_peers_costs_a_constant_number_of_processes(
        pluto: FakePluto, tmp_path: Path) -> None:
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(500))
    assert pluto.calls == Counter({"whack --status": 2, "addconn --autoall": 1,
                                   "whack --listen": 1})
    assert len(pluto.held) == 500
    # The on-demand conns are routed by the same addconn (--autoall on a config of them).
    assert pluto.autoall_confs[0].count("auto=ondemand") == 500


def test_reload_replaces_only_the_changed_conn(pluto: FakePluto, tmp_path: Path) -> None:
    install.load(tmp_path / "pluto.ctl", tmp_path, None, _conf(300))
    pluto.calls.clear()
    install.load(tmp_path / "pluto.ctl", tmp_path, _conf(300), _conf(300, changed=7))
    assert pluto.calls == Counter({"whack --status": 2, "whack --delete": 1,
                                   "addconn --autoall": 1, "whack --listen": 1})
    assert [line for line in pluto.autoall_confs[-1].splitlines()
            if line.startswith("conn ")] == ["conn oeagent-peer-p7-0"]
