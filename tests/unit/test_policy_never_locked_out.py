"""The never-locked-out list holds every DNS server and resolver oeagent is configured to use.

A server missing from ``oeagent-clear`` falls under NULL OE (or a peer's conn): if it speaks
IKE badly, or a peer at that address fails under ``enforce``, oeagent loses the very service
it needs to repair things (publishing, verifying, discovering, the dns-01 challenge).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import oeagent.policy as policy_module
from oeagent import config as config_module
from oeagent.policy import model
from oeagent.state import StateDir

SERVERS = {
    "discovery.resolver": "198.51.100.51",
    "challenge.dns.server": "198.51.100.52",
    "publish.dns.server": "198.51.100.53",
    "publish.resolver": "198.51.100.54",
}


def _config(tmp_path: Path, **extra: Any) -> config_module.Config:
    data: dict[str, Any] = {
        "host": {"names": ["h.oe.test"]},
        # An address, so no DNS query is needed to find the CA.
        "acme": {"directory": "https://198.51.100.55:14000/dir"},
        "discovery": {"resolver": SERVERS["discovery.resolver"], "resolver_trusted": True},
        "challenge": {"dns": {"server": SERVERS["challenge.dns.server"]}},
        "publish": {"resolver": SERVERS["publish.resolver"], "resolver_trusted": True,
                    "dns": {"server": SERVERS["publish.dns.server"]}},
        "state_dir": str(tmp_path / "state"),
        **extra,
    }
    return config_module.parse(data, tmp_path)


def _clear_group(cfg: config_module.Config, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(policy_module, "_has_ipv6_default_route", lambda: False)
    monkeypatch.setattr(model, "resolv_conf_servers", lambda: ["198.51.100.56"])
    StateDir(cfg.state_dir).ensure()
    policy = policy_module.desired(cfg, StateDir(cfg.state_dir), dt.datetime.now(dt.UTC))
    return policy.groups["oeagent-clear"]


def test_every_configured_dns_server_and_resolver_stays_clear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear = _clear_group(_config(tmp_path), monkeypatch)
    for key, address in SERVERS.items():
        assert f"{address}/32" in clear, f"{key} ({address}) is not in oeagent-clear: {clear}"
    assert "198.51.100.55/32" in clear, "the ACME CA"
    assert "198.51.100.56/32" in clear, "a resolv.conf name server"


def test_a_peer_at_the_publishing_primary_gets_no_conn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer (here from config) whose address is the publishing primary stays clear."""
    cfg = _config(tmp_path, policy={"peers": ["ns.oe.test 198.51.100.53 ecdsa enforce"]})
    monkeypatch.setattr(policy_module, "_has_ipv6_default_route", lambda: False)
    StateDir(cfg.state_dir).ensure()
    policy = policy_module.desired(cfg, StateDir(cfg.state_dir), dt.datetime.now(dt.UTC))
    assert policy.peers == []
    assert any("198.51.100.53 is a never-locked-out exception" in n for n in policy.notes)


def test_loopback_servers_need_no_exception(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_module.parse({"host": {"names": ["h.oe.test"]},
                               "acme": {"directory": "https://127.0.0.1:14000/dir"},
                               "state_dir": str(tmp_path / "state")}, tmp_path)
    assert _clear_group(cfg, monkeypatch) == ["198.51.100.56/32"]
