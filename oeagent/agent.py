"""``oeagent run``: the long-running agent. It only schedules the one-shot actions.

- Jobs (``default_jobs``) say when they want to run next; ``schedule`` holds the times and
  the loop sleeps in ``select`` until the next one or a signal (no polling loop).
- SIGTERM/SIGINT: outside a job, stop at once; inside one, abandon the current step by
  raising ``Shutdown`` (context managers clean up challenges; state writes are atomic), except
  inside a critical section (the NSS swap and its record), which finishes first. Exit 0.
- SIGHUP: reload the config; a broken one is reported and the old one kept.
- Each job takes the state lock itself, so one-shot commands can run between jobs.
- systemd: READY=1, WATCHDOG=1 (also at every step of a job: progress, not a timer thread),
  RELOADING=1, STOPPING=1, STATUS=.
- A failing job is logged and retried with backoff; it never kills the agent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import schedule

from oeagent import config as config_module
from oeagent import renewstate, sdnotify
from oeagent.config import Config
from oeagent.enroll import Critical
from oeagent.errors import OeagentError
from oeagent.report import Reporter
from oeagent.state import StateDir

log = logging.getLogger("oeagent.agent")


class Shutdown(BaseException):
    """Raised inside a job to abandon it when SIGTERM/SIGINT arrives."""


JobFunction = Callable[[Config, Reporter, Critical], dt.datetime]
"""Runs once; returns when it wants to run next (aware datetime)."""


@dataclass
class Job:
    name: str
    function: JobFunction
    failures: int = 0


def renew_job(config: Config, reporter: Reporter, critical: Critical) -> dt.datetime:
    from oeagent.hooks import HookError
    from oeagent.renew import renew

    now = dt.datetime.now(dt.UTC)
    try:
        result = renew(config, reporter, critical=critical, now=now).as_dict()
    except HookError as exc:
        log.error("renew: %s", exc)
        result = exc.result or {}
    except OeagentError as exc:
        record = renewstate.load(StateDir(config.state_dir))
        if record.failures and record.next_attempt and record.next_attempt > now:
            log.error("renew: %s", exc)  # renew recorded the failure and its backoff
            return record.next_attempt
        raise
    if result.get("issued") and config.publish.enabled:
        from oeagent.publish.actions import publish_after_deploy

        publish_after_deploy(config, reporter, what="renew")
    return dt.datetime.fromisoformat(str(result["next_check"]))


PUBLISH_INTERVAL = dt.timedelta(hours=1)


def publish_job(config: Config, reporter: Reporter, critical: Critical) -> dt.datetime:
    """Keep the advertisement in step: a next key's pins go out, mode none markers expire.

    Idempotent: an unchanged advertisement plans nothing and sends nothing.
    """
    now = dt.datetime.now(dt.UTC)
    if not config.publish.enabled:
        return now + dt.timedelta(hours=12)
    from oeagent.publish.actions import run_publish

    run_publish(config, reporter, now=now)
    return now + PUBLISH_INTERVAL


DISCOVERY_MAX_INTERVAL = dt.timedelta(minutes=15)
"""Never sleep longer: a one-shot ``oeagent discover`` reaches the policy within this."""


def discovery_job(config: Config, reporter: Reporter, critical: Critical,
                  now: dt.datetime | None = None) -> dt.datetime:
    """Refresh discovered peers before their advertisements expire; re-apply the OE policy
    when a decision differs from the installed one (only where `oeagent policy` was
    installed once). Runs next when the first peer falls due or a held advertisement
    expires (``oeagent.discovery.next_refresh``), no sooner than the cache's MIN_INTERVAL
    (30 s, also its spacing of retries) and no later than DISCOVERY_MAX_INTERVAL."""
    from oeagent.discovery import next_refresh
    from oeagent.discovery.entries import MIN_INTERVAL
    from oeagent.policy import refresh

    now = now or dt.datetime.now(dt.UTC)
    if refresh(config, reporter, now=now):
        reporter.step("policy", "a peer's decision changed; the OE policy was re-applied")
    due = next_refresh(config, now) or now + DISCOVERY_MAX_INTERVAL
    return min(max(due, now + MIN_INTERVAL), now + DISCOVERY_MAX_INTERVAL)


def default_jobs() -> list[Job]:
    """The agent's jobs, each a one-shot action on its own schedule."""
    return [Job("renew", renew_job), Job("publish", publish_job),
            Job("discovery", discovery_job)]


class LogReporter(Reporter):
    """Every step becomes one log line; each one also proves progress to the watchdog."""

    def __init__(self, job: str, on_step: Callable[[], None]) -> None:
        super().__init__(as_json=True, stream=None)
        self.job = job
        self.on_step = on_step

    def step(self, name: str, message: str, **data: Any) -> None:
        level = {"warning": logging.WARNING, "error": logging.ERROR,
                 "critical": logging.CRITICAL}.get(str(data.get("level")), logging.INFO)
        log.log(level, "%s: [%s] %s", self.job, name, message)
        self.on_step()


class _JournalFormatter(logging.Formatter):
    """``<priority>message``: journald reads the syslog level and adds its own timestamp."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{text}"


def configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("urllib3", "acme", "schedule"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


class Agent:
    def __init__(self, config_path: Path, config: Config, *, debug: bool = False,
                 jobs: list[Job] | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.debug = debug
        self.jobs = jobs if jobs is not None else default_jobs()
        self.scheduler = schedule.Scheduler()
        self.stop_signal: str | None = None
        self.reload_requested = False
        self.in_job = False
        self.critical_depth = 0
        self.watchdog = sdnotify.watchdog_interval()
        self.runs = 0

    # ---- signals --------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        first = self.stop_signal is None
        self.stop_signal = signal.Signals(signum).name
        # Abandon the job once; a second signal while it unwinds must not interrupt cleanup.
        if first and self.in_job and self.critical_depth == 0:
            raise Shutdown(self.stop_signal)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.critical_depth += 1
        try:
            yield
        finally:
            self.critical_depth -= 1

    # ---- jobs -----------------------------------------------------------------------------
    def _schedule(self, job: Job, when: dt.datetime) -> None:
        # Whole seconds (schedule's unit), rounded up: never run before the time asked for.
        delay = max(1, math.ceil((when - dt.datetime.now(dt.UTC)).total_seconds()))
        self.scheduler.every(delay).seconds.do(self._run, job).tag(job.name)
        log.info("%s: next run at %s", job.name,
                 (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)).isoformat(
                     timespec="seconds"))

    def _run(self, job: Job) -> type[schedule.CancelJob]:
        reporter = LogReporter(job.name, self._ping)
        self.in_job = True
        try:
            when = job.function(self.config, reporter, self.critical)
            job.failures = 0
        except Shutdown:
            log.warning("%s: abandoned for %s", job.name, self.stop_signal)
            return schedule.CancelJob
        except Exception as exc:
            job.failures += 1
            if self.debug or not isinstance(exc, OeagentError):
                log.exception("%s failed", job.name)
            else:
                log.error("%s failed: %s", job.name, exc)
            wait = min(self.config.renewal.retry_initial * 2 ** min(job.failures - 1, 30),
                       self.config.renewal.retry_max)
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        finally:
            self.in_job = False
            self.runs += 1
        if self.stop_signal is None:
            self._schedule(job, when)
        return schedule.CancelJob  # every run schedules its successor at its own time

    def _ping(self) -> None:
        if self.watchdog is not None:
            sdnotify.notify("WATCHDOG=1")

    def _reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1", "STATUS=reloading the configuration")
        try:
            new = config_module.load(self.config_path)
        except OeagentError as exc:
            log.error("reload failed; keeping the old configuration: %s",
                      str(exc).replace("\n", " "))
        else:
            self.config = new
            log.info("reloaded the configuration from %s", self.config_path)
            self.scheduler.clear()
            for job in self.jobs:
                self._schedule(job, dt.datetime.now(dt.UTC))
        sdnotify.notify("READY=1", "STATUS=running")

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> dict[str, object]:
        configure_logging(self.debug)
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        previous = {s: signal.signal(s, self._on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            log.info("agent started (pid %d, config %s)", os.getpid(), self.config_path)
            for job in self.jobs:
                self._schedule(job, dt.datetime.now(dt.UTC))
            sdnotify.notify("READY=1", "STATUS=running", f"MAINPID={os.getpid()}")
            while self.stop_signal is None:
                self.scheduler.run_pending()
                if self.reload_requested:
                    self._reload()
                    continue
                if self.stop_signal is not None:
                    break
                idle = self.scheduler.idle_seconds
                timeout = 3600.0 if idle is None else max(idle, 0.0)
                if self.watchdog is not None:
                    timeout = min(timeout, self.watchdog)
                with contextlib.suppress(InterruptedError):
                    ready, _, _ = select.select([read_fd], [], [], timeout)
                    if ready:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(read_fd, 512):
                                pass
                self._ping()
            log.info("agent stopping on %s", self.stop_signal)
            sdnotify.notify("STOPPING=1", f"STATUS=stopping on {self.stop_signal}")
            return {"stopped_by": self.stop_signal, "job_runs": self.runs}
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(read_fd)
            os.close(write_fd)
