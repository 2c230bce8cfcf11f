"""The generic half of the contract (no network): apply re-plans after a lost race and
gives up clearly; the rollover clock; the ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from oeagent import config
from oeagent.errors import EX_CONFIG, ConfigError
from oeagent.publish import advertise
from oeagent.publish.actions import run_publish, run_unenroll
from oeagent.publish.base import (
    APPLY_ATTEMPTS,
    Backend,
    Desired,
    Diff,
    Plan,
    PublishError,
    StalePlan,
    Verification,
)
from oeagent.report import Reporter
from oeagent.state import StateDir


class Racing(Backend):
    """Loses the compare-and-swap ``losses`` times, then wins."""

    name = "racing"

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.plans = 0
        self.sent = 0

    def plan(self, desired: Desired | None) -> Plan:
        self.plans += 1
        return Plan(self.name, desired, [Diff("+", "here", f"value {self.plans}")])

    def _apply(self, plan: Plan) -> None:
        self.sent += 1
        if self.sent <= self.losses:
            raise StalePlan("NXRRSET")

    def verify(self, desired: Desired | None, timeout: float) -> Verification:
        return Verification(self.name)


def test_apply_replans_after_a_lost_race() -> None:
    backend = Racing(losses=2)
    done = backend.apply(backend.plan(None))
    assert done.attempts == 3 and backend.plans == 3
    assert done.diffs[0].value == "value 3"  # the plan that won is the freshest one


def test_apply_gives_up_after_bounded_attempts() -> None:
    backend = Racing(losses=100)
    with pytest.raises(PublishError, match=f"kept changing.*{APPLY_ATTEMPTS} attempts"):
        backend.apply(backend.plan(None))
    assert backend.sent == APPLY_ATTEMPTS


def test_empty_plan_sends_nothing() -> None:
    backend = Racing(losses=0)
    assert backend.apply(Plan("racing", None)).attempts == 0 and backend.sent == 0


def _config(tmp_path: Path, backends: str) -> config.Config:
    path = tmp_path / "oeagent.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[host]\nnames = ["a.example"]\n'
                    f'[publish]\nbackends = {backends}\nmax_age = 3600\nzonefile = "z"\n'
                    f'[publish.dns]\nttl = 600\n[publish.wellknown]\nwebroot = "www"\n')
    return config.load(path)


def test_earliest_switch_waits_two_ttls_in_dns_and_a_max_age_for_the_document(
    tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "state")
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    ledger = advertise.Ledger({})
    ledger.note_pins(("aa" * 32, "bb" * 32), now)
    ledger.save(state, None)
    dns_only = _config(tmp_path, '["zonefile"]')
    assert advertise.earliest_switch(dns_only, state, "bb" * 32) == now + dt.timedelta(seconds=1200)
    both = _config(tmp_path, '["zonefile", "wellknown"]')
    assert advertise.earliest_switch(both, state, "bb" * 32) == now + dt.timedelta(hours=1)
    assert advertise.earliest_switch(both, state, "cc" * 32) is None  # never published


def test_ledger_keeps_first_publication_times(tmp_path: Path) -> None:
    first = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    later = first + dt.timedelta(days=1)
    ledger = advertise.Ledger({})
    ledger.note_pins(("aa" * 32,), first)
    ledger.note_pins(("aa" * 32, "bb" * 32), later)
    assert ledger.pins == {"aa" * 32: first.isoformat(), "bb" * 32: later.isoformat()}
    ledger.note_pins(("bb" * 32,), later)  # the old pin is forgotten once withdrawn
    assert list(ledger.pins) == ["bb" * 32]


def _unpublished_config(tmp_path: Path) -> config.Config:
    """A host that never configured publishing, with its own NSS directory and no pluto."""
    path = tmp_path / "plain.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[host]\nnames = ["a.example"]\n'
                    f'[nss]\ndatabase = "sql:{tmp_path}/nss"\n'
                    f'[pluto]\nctlsocket = "{tmp_path}/pluto.ctl"\n')
    return config.load(path)


def test_unenroll_remove_nss_works_without_publishing(tmp_path: Path) -> None:
    # Nothing was advertised, so there is nothing to withdraw: removing the identity (and
    # revoking it) must still be possible, not refused as "publishing is not configured".
    cfg = _unpublished_config(tmp_path)
    reporter = Reporter(as_json=True)
    planned = run_unenroll(cfg, reporter, remove_nss=True, dry_run=True)
    assert planned == {"dry_run": True}
    assert any(s.message.startswith("would delete 'oeagent'") for s in reporter.steps)
    done = run_unenroll(cfg, Reporter(as_json=True), remove_nss=True)
    assert done["nss_removed"] == 0 and not (tmp_path / "nss").exists()


def test_unenroll_without_publishing_and_without_remove_nss_changes_nothing(
    tmp_path: Path
) -> None:
    reporter = Reporter(as_json=True)
    assert run_unenroll(_unpublished_config(tmp_path), reporter) == {"dry_run": False}
    assert reporter.steps[0].message == (
        "publishing is not configured: no advertisement to withdraw")


def test_publish_without_backends_is_a_configuration_error(tmp_path: Path) -> None:
    # Exit 78 names the key to set; 69 would send the operator looking for a broken server.
    cfg = _unpublished_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        run_publish(cfg, Reporter(as_json=True), dry_run=True)
    assert info.value.exit_code == EX_CONFIG
    assert info.value.problems == [
        "publish.backends: is empty, so there is nothing to publish: list any of rfc2136, "
        "zonefile, wellknown"]
