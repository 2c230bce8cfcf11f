"""The discovery cache's refresh schedule and change detection, with a controlled clock.

The real PeerCache in a state directory; the lookups are Results as the Discoverer returns
them (the lab tests in tests/integration/test_refresh.py run the real lookups and policy).
The loop below is what the agent's discovery job does: run at ``next_due`` (no sooner than
MIN_INTERVAL), look up what is ``due``, re-apply when ``changed`` and record it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from oeagent.advertisement import Advertisement
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.entries import MIN_INTERVAL, Timing
from oeagent.discovery.lookup import Result
from oeagent.state import StateDir

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
HOST = "peer.example.org"
TIMING = Timing(dt.timedelta(seconds=300), dt.timedelta(days=1), dt.timedelta(seconds=12))
LIFETIME = dt.timedelta(seconds=300)  # discovery.min_cache, the usual DNS hold


def found(mode: str = "enforce") -> Callable[[dt.datetime], Result]:
    ad = Advertisement(HOST, "ecdsa", ("ab" * 32,), mode, 300)
    status = "none" if mode == "none" else "authenticated"
    return lambda now: Result(HOST, HOST, status, "dns", ad, now + LIFETIME, ("203.0.113.7",))


def failed(now: dt.datetime) -> Result:
    return Result(HOST, HOST, "unreachable", reasons=["DNS: timed out"])


class Simulation:
    """The agent's discovery job over the real cache; ``lookup`` answers each lookup."""

    def __init__(self, root: Path) -> None:
        self.state = StateDir(root)
        self.state.ensure()
        self.now = T0
        self.last_run = T0
        self.lookups: list[tuple[dt.datetime, dt.datetime | None]] = []  # (when, held_until)
        self.applies: list[dt.datetime] = []

    def cache(self) -> PeerCache:
        return PeerCache(self.state)

    def discover(self, lookup: Callable[[dt.datetime], Result]) -> None:
        """``oeagent discover`` then ``oeagent policy`` (installed at once)."""
        cache = self.cache()
        cache.update(lookup(self.now), self.now)
        cache.record_installed(cache.effective_keys(self.now), None)
        cache.save()

    def run(self, lookup: Callable[[dt.datetime], Result], until: dt.datetime) -> None:
        while True:
            due = self.cache().next_due(self.last_run, TIMING)
            assert due is not None
            when = max(due, self.last_run + MIN_INTERVAL)
            if when > until:
                self.now = until  # the clock stops here; the agent's next run stays at `when`
                return
            self.now = self.last_run = when
            cache = self.cache()
            for peer in cache.due(self.now, TIMING):
                self.lookups.append((self.now, cache.entries[peer].decision.held_until))
                cache.update(lookup(self.now), self.now)
            if cache.changed(self.now):
                self.applies.append(self.now)
                cache.record_installed(cache.effective_keys(self.now), None)
            cache.save()

    def decision(self) -> str:
        d = self.cache().entries[HOST].effective(self.now)
        return d.advertisement.mode if d.authenticated and d.advertisement else "null"


def test_refresh_lands_before_expiry_and_an_unchanged_result_does_not_reapply(
        tmp_path: Path) -> None:
    sim = Simulation(tmp_path)
    sim.discover(found())
    sim.run(found(), T0 + dt.timedelta(hours=3))
    assert sim.applies == []
    assert len(sim.lookups) >= 3 * 3600 / 300  # at least once per lifetime
    for when, held_until in sim.lookups:
        assert held_until is not None
        # In the last quarter of the lifetime, never at or after the expiry.
        assert held_until - LIFETIME / 4 <= when < held_until
    assert sim.decision() == "enforce"


def test_failed_refreshes_hold_enforce_until_expiry_then_release_and_reapply_once(
        tmp_path: Path) -> None:
    sim = Simulation(tmp_path)
    sim.discover(found())
    held_until = T0 + LIFETIME
    sim.run(failed, held_until - dt.timedelta(seconds=1))
    # Tries inside the margin, at least MIN_INTERVAL apart, all before the expiry; still
    # enforced.
    assert [when for when, _ in sim.lookups] == [held_until - dt.timedelta(seconds=s)
                                                 for s in (75, 37.5)]
    assert sim.applies == [] and sim.decision() == "enforce"
    entry = sim.cache().entries[HOST]
    assert entry.held and entry.decision.held_until == held_until
    sim.run(failed, T0 + dt.timedelta(hours=2))
    assert sim.applies == [held_until]  # released at the expiry itself, and only once
    assert sim.decision() == "null"


def test_expiry_changes_the_decision_without_any_lookup(tmp_path: Path) -> None:
    sim = Simulation(tmp_path)
    sim.discover(found())
    cache = sim.cache()
    before = T0 + LIFETIME - dt.timedelta(seconds=1)
    assert cache.changed(before) == []
    assert cache.changed(T0 + LIFETIME) == [HOST]  # what the cache says is no longer installed


def test_a_mode_change_reapplies_once(tmp_path: Path) -> None:
    sim = Simulation(tmp_path)
    sim.discover(found())
    sim.run(found("testing"), T0 + dt.timedelta(minutes=20))
    assert len(sim.applies) == 1 and sim.decision() == "testing"
    sim.run(found("none"), T0 + dt.timedelta(minutes=40))
    assert len(sim.applies) == 2 and sim.decision() == "null"
    sim.run(found("none"), T0 + dt.timedelta(hours=6))
    assert len(sim.applies) == 2


def test_margin_and_retry_spacing() -> None:
    hour = dt.timedelta(hours=1)
    assert TIMING.margin(LIFETIME) == dt.timedelta(seconds=75)
    assert TIMING.margin(dt.timedelta(seconds=60)) == dt.timedelta(seconds=15)
    assert Timing(hour, hour, dt.timedelta(seconds=40)).margin(
        dt.timedelta(seconds=60)) == dt.timedelta(seconds=30)  # never more than half
    assert TIMING.margin(dt.timedelta(days=1)) == hour  # at most the last hour
    assert TIMING.retry_held(hour) == dt.timedelta(minutes=20)  # three tries
    assert TIMING.retry_held(dt.timedelta(seconds=75)) == dt.timedelta(seconds=37.5)  # two
    assert TIMING.retry_held(MIN_INTERVAL) == MIN_INTERVAL  # one, then the expiry
    assert TIMING.retry_held(dt.timedelta(seconds=10)) == dt.timedelta(seconds=10)


def test_a_one_shot_discover_is_a_change_until_installed(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    cache = PeerCache(state)
    cache.update(found()(T0), T0)
    cache.save()
    cache = PeerCache(state)
    assert cache.changed(T0) == [HOST]
    cache.record_installed(cache.effective_keys(T0), None)
    cache.save()
    assert PeerCache(state).changed(T0 + dt.timedelta(seconds=10)) == []
