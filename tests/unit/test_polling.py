"""The polling schedule: fast first poll, exponential backoff, Retry-After, deadline."""

from __future__ import annotations

import datetime
import itertools

import pytest

from oeagent.ca import polling
from oeagent.errors import AcmeError


def test_schedule_starts_fast_and_grows_to_the_cap() -> None:
    delays = [polling.backoff_delay(i) for i in range(12)]
    assert delays[0] == pytest.approx(polling.FIRST_DELAY) == pytest.approx(0.01)
    assert delays[1] == pytest.approx(polling.FIRST_DELAY * polling.FACTOR)
    pairs = list(itertools.pairwise(delays))
    assert all(b >= a for a, b in pairs)
    assert all(1.5 <= b / a <= 2 for a, b in pairs if b < polling.MAX_DELAY)
    assert delays[-1] == polling.MAX_DELAY
    # The first second holds several polls: a local CA is seen within ~10-60 ms.
    assert sum(delays[:4]) < 0.15
    # ...but a slow CA is not hammered: at most ten polls in the first two seconds.
    assert len([t for t in itertools.accumulate(delays) if t < 2.0]) + 1 <= 10


def test_huge_attempt_does_not_overflow() -> None:
    assert polling.backoff_delay(10**6) == polling.MAX_DELAY


def test_negative_attempt_is_a_bug() -> None:
    with pytest.raises(ValueError):
        polling.backoff_delay(-1)


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("soon", None), ("3", 3.0), (" 7 ", 7.0), ("0", 0.0),
    ("100000", polling.MAX_RETRY_AFTER),
])
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert polling.parse_retry_after(header) == expected


def test_retry_after_http_date() -> None:
    now = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)
    assert polling.parse_retry_after("Thu, 03 Dec 2026 12:00:05 GMT", now) == pytest.approx(5)
    # A date in the past means "poll now", not a negative sleep.
    assert polling.parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now) == 0.0


def test_next_wait_prefers_retry_after_but_never_passes_the_deadline() -> None:
    assert polling.next_wait(0, None, 10) == pytest.approx(polling.FIRST_DELAY)
    assert polling.next_wait(0, 2.0, 10) == 2.0
    assert polling.next_wait(5, 30.0, 1.5) == 1.5
    assert polling.next_wait(0, None, -1) == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_poll_until_returns_when_done_and_honours_retry_after() -> None:
    clock = FakeClock()
    answers = iter([("pending", None), ("pending", "2"), ("pending", None), ("valid", None)])
    result = polling.poll_until(lambda: next(answers), lambda s: s == "valid", deadline=60,
                                describe_pending=lambda s: s, clock=clock, sleep=clock.sleep)
    assert result == "valid"
    first = polling.FIRST_DELAY
    assert clock.sleeps == [pytest.approx(first), 2.0, pytest.approx(first * polling.FACTOR**2)]


def test_poll_until_times_out_naming_what_is_pending() -> None:
    clock = FakeClock()
    with pytest.raises(AcmeError, match=r"server\.oe\.test still pending.*order_timeout"):
        polling.poll_until(lambda: ("pending", None), lambda s: False, deadline=5,
                           describe_pending=lambda s: "server.oe.test still pending",
                           clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(5)
    assert max(clock.sleeps) <= polling.MAX_DELAY
