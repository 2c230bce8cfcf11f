"""When to ask the CA again: a backoff schedule that starts fast, and Retry-After.

The ``acme`` library's ``poll_and_finalize`` sleeps a fixed second between polls. Against a
CA that validates in a few milliseconds (Pebble, a local step-ca, or Let's Encrypt on a
good day) that second is most of the wall time of an issuance, and it is paid twice
(authorizations, then the order). So we poll at 10 ms first and back off exponentially to a
cap of a few seconds: against a local CA each wait costs ~10-30 ms instead of a second, and
against a slow one it adds two or three requests in the first second (ten polls in the
first two seconds, eight with a 50 ms start), then the cap keeps the count low. A CA's
Retry-After always wins over our schedule (RFC 8555 §8.2), but never past the deadline.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Callable
from typing import TypeVar

from oeagent.errors import AcmeError

FIRST_DELAY = 0.01
FACTOR = 1.7
MAX_DELAY = 3.0
# Whatever a CA asks for, one wait never exceeds this: a broken Retry-After must not hang us.
MAX_RETRY_AFTER = 60.0

T = TypeVar("T")


def backoff_delay(attempt: int, first: float = FIRST_DELAY, factor: float = FACTOR,
                  cap: float = MAX_DELAY) -> float:
    """Seconds to wait before poll number ``attempt`` + 1 (``attempt`` counts from 0)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # Multiply step by step and stop at the cap: factor**attempt would overflow for huge attempts.
    delay = first
    for _ in range(attempt):
        delay *= factor
        if delay >= cap:
            return cap
    return min(delay, cap)


def parse_retry_after(
    value: str | None,
    now: datetime.datetime | None = None,
    cap: float | None = MAX_RETRY_AFTER,
) -> float | None:
    """Seconds from ``now`` that a Retry-After header asks for, or None if absent/invalid.

    RFC 9110 §10.2.3 allows delta-seconds or an HTTP-date; a date in the past means "now".
    ``cap`` bounds a wait inside one order; renewal scheduling passes None (a rate limit's
    Retry-After of hours must be honoured as it is).
    """
    limit = cap if cap is not None else float("inf")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), limit)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; treat a zone-less one the same way
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return min(max((when - now).total_seconds(), 0.0), limit)


def next_wait(attempt: int, retry_after: float | None, remaining: float) -> float:
    """The wait before the next poll: Retry-After if the CA sent one, else the backoff;
    never longer than the time left before the deadline."""
    wait = retry_after if retry_after is not None else backoff_delay(attempt)
    return max(0.0, min(wait, remaining))


def poll_until(fetch: Callable[[], tuple[T, str | None]], done: Callable[[T], bool],
               deadline: float, describe_pending: Callable[[T], str],
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fetch`` (returning a result and its Retry-After header) until ``done``.

    ``deadline`` is on ``clock``'s scale (time.monotonic). Raises AcmeError naming what is
    still pending when the deadline passes.
    """
    attempt = 0
    while True:
        result, retry_after = fetch()
        if done(result):
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            raise AcmeError(
                f"gave up waiting for the CA: {describe_pending(result)} "
                "(acme.order_timeout reached)"
            )
        sleep(next_wait(attempt, parse_retry_after(retry_after), remaining))
        attempt += 1
