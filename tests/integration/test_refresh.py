"""The agent's discovery job against the real lab, on a clock the test controls.

The job runs as ``oeagent run`` runs it (``discovery_job``, each run at the time the previous
one asked for), but with ``now`` passed in: the lookups are real (BIND's signed zone through
unbound, which validates at the real time), the cache is the real ``peers.json``, and the
policy is really rendered, checked with ``ipsec addconn --checkconfig`` and written into the
test's ipsec directory (no pluto: "pluto is not running; it loads the policy when it starts").
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import Lab
from oeagent import config as config_module
from oeagent.agent import DISCOVERY_MAX_INTERVAL, discovery_job
from oeagent.config import Config
from oeagent.discovery import discover
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.entries import MIN_INTERVAL, Entry
from oeagent.policy import apply
from oeagent.report import Reporter
from oeagent.state import StateDir
from tests.integration.oe_peers import new_advert, publish_dns, unique, withdraw_dns
from tests.renewal.conftest import AgentProcess

pytestmark = pytest.mark.lab
PEER_ADDRESS = "203.0.113.77"  # only written into the policy; nothing is sent to it


def config(make_lab_config: Callable[..., Path], lab: Lab, min_cache: int = 60) -> Config:
    """``min_cache`` is how long an advertisement with the lab's 1-second TTL is held."""
    return config_module.load(make_lab_config({"discovery": {
        "resolver": "127.0.0.1", "resolver_port": lab.info.unbound_port, "dns_timeout": 1,
        "https": False, "min_cache": min_cache}}))


@dataclasses.dataclass
class Run:
    at: dt.datetime
    held_until_before: dt.datetime | None
    entry: Entry
    reapplied: bool
    installs: int  # apply() wrote the policy files


class Agent:
    """The discovery job, run after run at the times it asks for, on a simulated clock."""

    def __init__(self, cfg: Config, fqdn: str, start: dt.datetime) -> None:
        self.cfg = cfg
        self.fqdn = fqdn
        self.next = start
        self.runs: list[Run] = []

    def entry(self) -> Entry:
        return PeerCache(StateDir(self.cfg.state_dir)).entries[self.fqdn]

    def run_once(self) -> Run:
        at = self.next
        before = self.entry().decision.held_until
        reporter = Reporter(stream=io.StringIO())
        self.next = discovery_job(self.cfg, reporter, contextlib.nullcontext, now=at)
        assert at + MIN_INTERVAL <= self.next <= at + DISCOVERY_MAX_INTERVAL
        run = Run(at, before, self.entry(),
                  any(s.name == "policy" and "re-applied" in s.message for s in reporter.steps),
                  sum(s.name == "install" for s in reporter.steps))
        self.runs.append(run)
        return run

    def run_until(self, end: dt.datetime) -> list[Run]:
        done = []
        while self.next <= end:
            done.append(self.run_once())
        return done

    def run_until_looked_up(self, limit: int = 10) -> list[Run]:
        """Run until a run looks the peer up (then return the runs so far)."""
        done = []
        for _ in range(limit):
            done.append(self.run_once())
            if done[-1].entry.checked_at == done[-1].at:
                return done
        raise AssertionError(f"no lookup in {limit} runs")

    def conf(self) -> str:
        return (self.cfg.pluto.ipsec_dir / "oeagent.conf").read_text()


def peer_conn(conf: str, fqdn: str) -> str | None:
    blocks = [b for b in conf.split("\nconn ") if f"rightid=@{fqdn}\n" in b]
    return blocks[0] if blocks else None


def start(cfg: Config, fqdn: str, t0: dt.datetime) -> Agent:
    """`oeagent discover PEER` and `oeagent policy` at t0, then the agent from t0 + 1 s."""
    discover(cfg, [fqdn], out=io.StringIO(), now=t0)
    apply(cfg, Reporter(stream=io.StringIO()), now=t0)
    agent = Agent(cfg, fqdn, t0 + dt.timedelta(seconds=1))
    first = agent.run_once()  # the policy already holds the peer: nothing to re-apply
    assert not first.reapplied and first.installs == 0
    return agent


def test_enforce_peer_is_refreshed_before_expiry_and_released_at_it_when_lookups_fail(
        lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = config(make_lab_config, lab, min_cache=300)  # a 75 s refresh margin: two tries
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1, address=PEER_ADDRESS)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    agent = start(cfg, ad.fqdn, t0)
    enforced = peer_conn(agent.conf(), ad.fqdn)
    assert enforced is not None and "failureshunt=drop" in enforced

    # Unchanged advertisement: every lookup lands before the expiry of what it renews, the
    # peer is enforced at every run, and the policy is never re-applied.
    runs = agent.run_until(t0 + dt.timedelta(minutes=30))
    lookups = [r for r in runs if r.entry.checked_at == r.at]
    assert len(lookups) >= 30 * 60 // 300
    for r in lookups:
        assert r.held_until_before is not None
        assert r.held_until_before - dt.timedelta(seconds=75) <= r.at < r.held_until_before
        assert r.entry.last_status == "authenticated" and not r.entry.held
    assert all(r.entry.effective(r.at).authenticated for r in runs)
    assert not any(r.reapplied or r.installs for r in runs)

    # The peer's records vanish: each lookup finds nothing (validated denial), the peer stays
    # enforced until held_until, then is released and the policy re-applied exactly once.
    withdraw_dns(lab, ad.fqdn)
    held_until = agent.entry().decision.held_until
    assert held_until is not None
    runs = agent.run_until(held_until + dt.timedelta(minutes=30))
    before = [r for r in runs if r.at < held_until]
    after = [r for r in runs if r.at >= held_until]
    assert before and all(r.entry.held and r.entry.effective(r.at).authenticated
                          and not r.reapplied for r in before)
    assert sum(r.entry.checked_at == r.at and r.entry.last_status == "none"
               for r in before) == 2  # it did look, twice, and failed
    assert after[0].at == held_until  # the run after the last try falls on the expiry
    assert [r.at for r in runs if r.reapplied] == [held_until]
    assert sum(r.installs for r in runs) == 1
    assert not after[-1].entry.effective(after[-1].at).authenticated
    assert peer_conn(agent.conf(), ad.fqdn) is None  # NULL OE for it, like everyone else


def test_mode_changes_reapply_the_policy_once_each(
        lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = config(make_lab_config, lab)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1, address=PEER_ADDRESS)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    agent = start(cfg, ad.fqdn, t0)

    publish_dns(lab, dataclasses.replace(ad, mode="testing"), key, ttl=1, address=PEER_ADDRESS)
    runs = agent.run_until_looked_up()
    assert [r.reapplied for r in runs][-1] and sum(r.reapplied for r in runs) == 1
    testing = peer_conn(agent.conf(), ad.fqdn)
    assert testing is not None and "failureshunt=passthrough" in testing
    runs = agent.run_until_looked_up()  # the same again: nothing to re-apply
    assert not any(r.reapplied or r.installs for r in runs)

    released, _ = new_advert(ad.fqdn, mode="none")
    publish_dns(lab, released, None, ttl=1, address=PEER_ADDRESS)
    runs = agent.run_until_looked_up()
    assert sum(r.reapplied for r in runs) == 1 and sum(r.installs for r in runs) == 1
    assert peer_conn(agent.conf(), ad.fqdn) is None
    later = agent.run_until(agent.next + dt.timedelta(hours=1))
    assert later and not any(r.reapplied or r.installs for r in later)


def test_a_policy_written_by_a_one_shot_command_is_brought_in_line(
        lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    """The agent recorded 'enforce'; meanwhile `oeagent discover` + `oeagent policy` installed
    'testing', and the peer went back to 'enforce' before the agent's next run. The agent's
    record equals the cache, but the file is not the one it wrote: it re-applies."""
    cfg = config(make_lab_config, lab)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1, address=PEER_ADDRESS)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    agent = start(cfg, ad.fqdn, t0)
    by_hand = agent.next - dt.timedelta(seconds=1)
    publish_dns(lab, dataclasses.replace(ad, mode="testing"), key, ttl=1, address=PEER_ADDRESS)
    discover(cfg, [ad.fqdn], out=io.StringIO(), now=by_hand)
    apply(cfg, Reporter(stream=io.StringIO()), now=by_hand)
    assert "failureshunt=passthrough" in (peer_conn(agent.conf(), ad.fqdn) or "")
    publish_dns(lab, ad, key, ttl=1, address=PEER_ADDRESS)
    discover(cfg, [ad.fqdn], out=io.StringIO(), now=by_hand)
    run = agent.run_once()
    assert run.reapplied and run.installs == 1
    assert "failureshunt=drop" in (peer_conn(agent.conf(), ad.fqdn) or "")
    assert not any(r.reapplied for r in agent.run_until(agent.next + dt.timedelta(minutes=5)))


def test_running_agent_reapplies_the_policy_when_an_advertisement_changes(
        lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    """`oeagent run` itself, on the real clock: its discovery job notices the mode change at
    the refresh it scheduled (half a minute before the 60 s hold runs out) and re-applies."""
    path = make_lab_config({"discovery": {
        "resolver": "127.0.0.1", "resolver_port": lab.info.unbound_port, "dns_timeout": 1,
        "https": False, "min_cache": 60}, "policy.responder": False})
    cfg = config_module.load(path)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=1, address=PEER_ADDRESS)
    t0 = dt.datetime.now(dt.UTC)
    discover(cfg, [ad.fqdn], out=io.StringIO(), now=t0)
    apply(cfg, Reporter(stream=io.StringIO()), now=t0)
    agent = AgentProcess(path)
    try:
        agent.wait_for(r"discovery: next run at", 60)
        assert not any("re-applied" in line for line in agent.lines)
        publish_dns(lab, dataclasses.replace(ad, mode="testing"), key, ttl=1,
                    address=PEER_ADDRESS)
        agent.wait_for(r"discovery: \[policy\] a peer's decision changed", 60)
        testing = peer_conn((cfg.pluto.ipsec_dir / "oeagent.conf").read_text(), ad.fqdn)
        assert testing is not None and "failureshunt=passthrough" in testing
        entry = PeerCache(StateDir(cfg.state_dir)).entries[ad.fqdn]
        # Looked up in the refresh margin of the first hold, before it ran out.
        assert t0 + dt.timedelta(seconds=30) <= entry.checked_at < t0 + dt.timedelta(seconds=60)
        assert entry.decision.advertisement is not None
        assert entry.decision.advertisement.mode == "testing"
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert sum("re-applied" in line for line in agent.lines) == 1
