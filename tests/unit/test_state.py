"""State directory: modes, atomic writes, and the run lock."""

from __future__ import annotations

import multiprocessing
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oeagent.errors import LockError, StateError
from oeagent.fsio import atomic_write
from oeagent.state import StateDir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_creates_private_dirs(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    assert mode(state.root) == 0o700
    for sub in ("accounts", "keys", "certs", "nss-work"):
        assert mode(state.root / sub) == 0o700


def test_loose_existing_state_dir_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    StateDir(root).ensure()
    assert mode(root) == 0o700


def test_atomic_write_sets_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    atomic_write(target, b"one", 0o600)
    atomic_write(target, b"two", 0o600)
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_failed_atomic_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cert.pem"
    atomic_write(target, b"good", 0o644)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new content", 0o644)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_json_round_trip_and_corrupt_json(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.write_json(state.current_path, {"serial": "ab"})
    assert state.read_json(state.current_path) == {"serial": "ab"}
    assert mode(state.current_path) == 0o600
    state.current_path.write_text("{half")
    with pytest.raises(StateError, match="not valid JSON"):
        state.read_json(state.current_path)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)


@given(st.dictionaries(st.text(max_size=5), _JSON, max_size=4), st.integers(0, 3))
def test_json_with_inline_levels_reads_back_the_same(document: dict[str, Any],
                                                      inline_below: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = StateDir(Path(tmp))
        state.write_json(state.current_path, document, inline_below=inline_below)
        assert state.read_json(state.current_path) == document


def test_inline_json_puts_one_entry_per_line(tmp_path: Path) -> None:
    """peers.json: one line per peer, so an operator can grep and diff it."""
    state = StateDir(tmp_path)
    peers = {f"p{i}.example": {"status": "none", "reasons": ["a", "b"]} for i in (2, 1, 0)}
    state.write_json(state.current_path, {"version": 1, "peers": peers, "installed": {}},
                     inline_below=2)
    lines = state.current_path.read_text().splitlines()
    assert lines[1] == '  "installed": {},'
    assert lines[3] == '    "p0.example": {"reasons": ["a", "b"], "status": "none"},'
    assert len(lines) == 9 and lines[-2] == '  "version": 1'


def _hold_lock(root: str, ready: multiprocessing.synchronize.Event, seconds: float) -> None:  # type: ignore[name-defined]
    with StateDir(Path(root)).lock(timeout=1):
        ready.set()
        time.sleep(seconds)


def test_second_run_fails_clearly_while_lock_held(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, 3.0))
    holder.start()
    try:
        assert ready.wait(5)
        started = time.monotonic()
        with pytest.raises(LockError) as info, StateDir(tmp_path).lock(timeout=0.3):
            pass
        assert time.monotonic() - started >= 0.3
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.exit_code == 75
    finally:
        holder.join()


def test_second_run_waits_for_a_short_holder(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, 0.3))
    holder.start()
    try:
        assert ready.wait(5)
        with StateDir(tmp_path).lock(timeout=10):
            assert not holder.is_alive() or holder.exitcode is None
        holder.join(5)
        assert holder.exitcode == 0
    finally:
        holder.join()


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, 60))
    holder.start()
    assert ready.wait(5)
    assert holder.pid is not None
    os.kill(holder.pid, 9)
    holder.join()
    with StateDir(tmp_path).lock(timeout=2):
        pass


def test_stale_temp_files_are_removed_and_real_files_kept(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write_json(state.current_path, {"serial": "ab"})
    stale = state.root / "certs" / ".cert.pem.k3j2.tmp"
    stale.write_text("half")
    assert state.remove_stale_temp_files() == [stale]
    assert not stale.exists() and state.read_json(state.current_path) == {"serial": "ab"}
