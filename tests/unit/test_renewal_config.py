"""The [renewal], [hooks] and [rollover] config sections, and the sd_notify protocol."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from oeagent import config as config_module
from oeagent import sdnotify
from oeagent.errors import ConfigError


def parse(extra: dict[str, Any]) -> config_module.Config:
    return config_module.parse({"host": {"names": ["a.example"]}, **extra}, base_dir=Path("/"))


def test_defaults_and_durations() -> None:
    cfg = parse({})
    assert cfg.renewal.ari and cfg.renewal.retry_initial == 60 and cfg.hooks.post_deploy == ()
    assert cfg.rollover.key_lifetime == 0
    cfg = parse({"renewal": {"retry_initial": "90s", "retry_max": "2h", "check_interval": "1h"},
                 "rollover": {"key_lifetime": "365d", "announce": "2d"}})
    assert (cfg.renewal.retry_initial, cfg.renewal.retry_max) == (90, 7200)
    assert cfg.rollover.key_lifetime == 365 * 86400 and cfg.rollover.announce == 2 * 86400


def test_every_problem_reported_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"renewal": {"retry_initial": "soon", "jitter": 0.9, "bogus": 1},
               "hooks": {"post_deploy": ["systemctl reload x", [], ["relative", "x"]]},
               "rollover": {"key_lifetime": "1d", "announce": "2d"}})
    text = str(info.value)
    for key in ("renewal.retry_initial", "renewal.jitter", "renewal.bogus",
                "hooks.post_deploy[0]", "hooks.post_deploy[1]", "hooks.post_deploy[2]",
                "rollover.announce"):
        assert key in text, key
    assert "never run through a shell" in text


def test_hooks_are_argument_lists() -> None:
    cfg = parse({"hooks": {"post_deploy": [["/usr/bin/touch", "/tmp/x y"]], "timeout": 5}})
    assert cfg.hooks.post_deploy == (("/usr/bin/touch", "/tmp/x y"),)


def test_sd_notify_sends_datagrams_and_is_silent_outside_systemd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1", "STATUS=running")
        assert sock.recv(100) == b"READY=1\nSTATUS=running"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # nobody reads it
        sock.bind(str(tmp_path / "full"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "full"))
        results = {sdnotify.notify("WATCHDOG=1") for _ in range(2000)}
        assert results == {True, False}  # the queue filled up; the sender never blocked
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 5
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None


def test_keyroll_announcement_by_a_publisher_delays_the_switch(tmp_path: Path) -> None:
    import datetime as dt

    from oeagent import keyroll, keys
    from oeagent.report import NullReporter
    from oeagent.state import StateDir

    cfg = config_module.parse({"host": {"names": ["a.example"]}, "state_dir": str(tmp_path),
                               "rollover": {"key_lifetime": "10d", "announce": "2d"}},
                              base_dir=tmp_path)
    state = StateDir(tmp_path)
    state.ensure()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    state.write_bytes(state.cert_key_path, keys.key_to_pem(keys.generate_key("ecdsa-p256")))
    assert keyroll.prepare(cfg, state, NullReporter(), t0) is None  # lifetime clock starts
    assert keyroll.prepare(cfg, state, NullReporter(), t0 + dt.timedelta(days=7)) is None
    upcoming = keyroll.prepare(cfg, state, NullReporter(), t0 + dt.timedelta(days=8))
    assert upcoming is not None and keyroll.current_and_next_keys(state)[1] == upcoming
    # The publisher says the pin went out a day later: the switch waits 2 days from then.
    keyroll.mark_announced(state, upcoming.spki_sha256, t0 + dt.timedelta(days=9))
    assert keyroll.switch_ready(cfg, state, t0 + dt.timedelta(days=10, hours=12)) is None
    assert keyroll.switch_ready(cfg, state, t0 + dt.timedelta(days=11)) is not None
    keyroll.promote_next(state, t0 + dt.timedelta(days=11))
    current, after = keyroll.current_and_next_keys(state)
    assert after is None and current is not None and current.spki_sha256 == upcoming.spki_sha256
    assert (tmp_path / "keys" / "previous.pem").exists()
