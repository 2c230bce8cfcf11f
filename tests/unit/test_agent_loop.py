"""The agent loop in-process: a failing job is logged and retried and never kills the agent;
jobs are a plain list (where later issues add theirs); journald-friendly log lines."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from oeagent import config as config_module
from oeagent.agent import Agent, Job, _JournalFormatter, default_jobs
from oeagent.enroll import Critical
from oeagent.report import Reporter


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_failing_job_is_retried_and_never_kills_the_agent(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], restore_logging: None) -> None:
    cfg = config_module.parse({"host": {"names": ["a.example"]}, "state_dir": str(tmp_path),
                               "renewal": {"retry_initial": 1, "retry_max": 1}},
                              base_dir=tmp_path)
    failures: list[str] = []

    def boom(config: config_module.Config, reporter: Reporter, critical: Critical) -> dt.datetime:
        reporter.step("work", "about to fail")
        failures.append("x")
        raise RuntimeError("kaputt")

    def stopper(config: config_module.Config, reporter: Reporter,
                critical: Critical) -> dt.datetime:
        if len(failures) >= 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return dt.datetime.now(dt.UTC)

    agent = Agent(tmp_path / "oeagent.toml", cfg, jobs=[Job("boom", boom), Job("stop", stopper)])
    result = agent.run()
    assert result["stopped_by"] == "SIGTERM" and len(failures) >= 2
    err = capfd.readouterr().err
    assert err.count("boom failed") >= 2 and "RuntimeError: kaputt" in err
    assert "boom: [work] about to fail" in err and "agent stopping on SIGTERM" in err
    # the handlers are back as they were
    assert signal.getsignal(signal.SIGTERM) is not agent._on_stop


def test_default_jobs_are_a_plain_list_to_extend() -> None:
    assert [job.name for job in default_jobs()] == ["renew", "publish", "discovery"]


def test_journald_lines_carry_the_syslog_priority() -> None:
    formatter = _JournalFormatter("%(message)s")
    record = logging.LogRecord("oeagent", logging.ERROR, __file__, 1, "two\nlines", None, None)
    assert formatter.format(record) == "<3>two | lines"
