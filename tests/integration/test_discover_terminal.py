"""``oeagent discover --from-file`` on a terminal: the real CLI under a pseudo-terminal, against
the lab. Progress goes to stderr only when stderr is a terminal; piped, there is none; and
``--json`` keeps stdout one JSON line per peer (then the summary) either way."""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import Lab
from tests.integration.oe_peers import new_advert, publish_dns, unique

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
CLEAR_LINE = "\r\033[K"


def _peers(lab: Lab, tmp_path: Path) -> tuple[Path, list[str]]:
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key)
    peers = [ad.fqdn, unique(), unique(), "host.bogus.oe.test", unique()]
    listing = tmp_path / "peers.txt"
    listing.write_text("# a handful of peers\n" + "\n".join(peers) + "\n")
    return listing, peers


def run(config: Path, args: list[str], *, stdout_tty: bool, stderr_tty: bool
        ) -> tuple[int, str, str, str]:
    """Run the CLI with stdout/stderr on a pty or a pipe: (exit, stdout, stderr, terminal)."""
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oeagent", "--config", str(config), *args],
        stdin=subprocess.DEVNULL, env=env,
        stdout=slave if stdout_tty else subprocess.PIPE,
        stderr=slave if stderr_tty else subprocess.PIPE)
    os.close(slave)
    terminal = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # drain the terminal until the child closes it
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None and not _readable(master):
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every slave end is closed
                    raise
                break
            if not chunk:
                break
            terminal += chunk
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return (proc.returncode, (out or b"").decode(), (err or b"").decode(),
            terminal.decode().replace("\r\n", "\n"))


def _readable(master: int) -> bool:
    ready, _, _ = select.select([master], [], [], 0)
    return bool(ready)


@pytest.fixture
def config(lab: Lab, make_lab_config: Callable[..., Path]) -> Path:
    return make_lab_config({"discovery": {
        "resolver_port": lab.info.unbound_port, "dns_timeout": 1, "https": False,
        "concurrency": 2}})


def _json_lines(stdout: str, peers: list[str]) -> None:
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == len(peers) + 1, stdout
    assert sorted(x["peer"] for x in lines[:-1]) == sorted(peers)
    assert lines[-1]["command"] == "discover" and lines[-1]["peers"] == len(peers)
    assert "looked up" not in stdout and "\033" not in stdout


def test_progress_on_a_terminal_and_json_lines_on_stdout(
        lab: Lab, config: Path, tmp_path: Path) -> None:
    listing, peers = _peers(lab, tmp_path)
    code, stdout, _, terminal = run(config, ["discover", "--from-file", str(listing),
                                                  "--json"], stdout_tty=False, stderr_tty=True)
    assert code == 0, terminal
    _json_lines(stdout, peers)
    n = len(peers)
    assert all(f"{i}/{n} looked up" in terminal for i in range(1, n + 1)), terminal
    assert terminal.count(CLEAR_LINE) == n  # the progress line is cleared before each row
    assert terminal.endswith(f"{n}/{n} looked up\n")


def test_no_progress_when_stderr_is_piped(lab: Lab, config: Path, tmp_path: Path) -> None:
    listing, peers = _peers(lab, tmp_path)
    code, stdout, stderr, terminal = run(config, ["discover", "--from-file", str(listing),
                                                  "--json"], stdout_tty=False, stderr_tty=False)
    assert code == 0, stderr
    _json_lines(stdout, peers)
    assert "looked up" not in stderr and "\033" not in stderr
    assert terminal == ""


def test_rows_and_progress_share_the_terminal(lab: Lab, config: Path, tmp_path: Path) -> None:
    """Both on the terminal (an operator at a shell): each row replaces the progress line,
    so every row reads whole, and the last line is the final count."""
    listing, peers = _peers(lab, tmp_path)
    code, _, _, terminal = run(config, ["discover", "--from-file", str(listing)],
                               stdout_tty=True, stderr_tty=True)
    assert code == 0, terminal
    rows = [line.rsplit(CLEAR_LINE, 1)[-1] for line in terminal.split("\n")]
    for peer in peers:
        assert any(r.startswith(f"{peer}: ") for r in rows), terminal
    assert f"{len(peers)}/{len(peers)} looked up" in terminal
    authenticated = next(r for r in rows if r.startswith(f"{peers[0]}: "))
    assert "authenticated" in authenticated and "looked up" not in authenticated
