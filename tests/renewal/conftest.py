"""Renewal tests: a lab whose Pebble issues 20-second certificates, and a running-agent helper.

With 20-second certificates the lifetime rule (half the lifetime left, minus up to 5 %
jitter) makes a renewal due about 9-10 seconds after issuance, so the agent renews for
real, against the real Pebble, within a test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from lab import Lab

REPO = Path(__file__).resolve().parents[2]
VALIDITY = 20


@pytest.fixture(scope="session")
def short_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("pebble") is None:
        pytest.skip("pebble not installed (run `make deps`)")
    the_lab = Lab(tmp_path_factory.mktemp("shortlab"), cert_validity_seconds=VALIDITY)
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


ShortConfig = Callable[..., Path]


@pytest.fixture
def short_config(short_lab: Lab, tmp_path: Path) -> ShortConfig:
    """``short_config(overrides=None, name=...)``: a config with fast retries for this test."""

    def make(overrides: Mapping[str, Any] | None = None, name: str = "oeagent.toml") -> Path:
        base = {"renewal.retry_initial": 1, "renewal.retry_max": 2, "lock_timeout": 30}
        return short_lab.write_config(tmp_path / name, {**base, **(overrides or {})},
                                      root=tmp_path)

    return make


def oeagent(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oeagent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="oe3-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class NotifySocket:
    """Plays systemd's side of sd_notify: collects every datagram the agent sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class AgentProcess:
    """``oeagent run`` in a subprocess; its stderr lines are collected as they come."""

    def __init__(self, config: Path, *, env: Mapping[str, str] | None = None,
                 driver: Path | None = None) -> None:
        argv = [sys.executable, str(driver)] if driver else [sys.executable, "-m", "oeagent"]
        self.proc = subprocess.Popen(
            [*argv, "--config", str(config), "run"], stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, count: int = 1) -> list[str]:
        """Wait until ``count`` stderr lines match ``pattern``; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    raise AssertionError(f"no {count} line(s) matching {pattern!r} in "
                                         f"{timeout} s; agent said:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._thread.join(5)
        if self.proc.stderr is not None and not self._thread.is_alive():
            self.proc.stderr.close()


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentProcess]]:
    """Start agents; every one still running at the end is killed."""
    started: list[AgentProcess] = []

    def start(config: Path, **kwargs: Any) -> AgentProcess:
        agent = AgentProcess(config, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()
