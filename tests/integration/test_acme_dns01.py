"""dns-01 against the lab: RFC 2136 + TSIG to BIND (inline-signed zone), Pebble validating."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from lab import Lab
from oeagent import config as config_mod
from oeagent.ca import issue_certificate, order
from oeagent.errors import ChallengeError, DnsUpdateError
from oeagent.keys import generate_key
from oeagent.report import Reporter
from oeagent.state import StateDir
from tests.integration.publish_support import fresh_name

pytestmark = pytest.mark.lab

OWNER = "_acme-challenge.server.oe.test"


def _txt(lab: Lab, name: str = OWNER) -> set[str]:
    reply = lab.dig(name, "TXT")
    return {r.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT
            for r in rrset}


def _eventually(lab: Lab, expected: set[str], name: str = OWNER) -> set[str]:
    """The TXT values once they equal ``expected``: an inline-signing BIND serves a change
    some milliseconds after the update."""
    deadline = time.monotonic() + 5
    while (seen := _txt(lab, name)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return seen


def _issue(cfg: config_mod.Config, reporter: Reporter | None = None) -> None:
    issue_certificate(cfg, StateDir(cfg.state_dir), generate_key("ecdsa-p256"),
                      reporter or Reporter(as_json=True))


def _dns_config(make: Callable[..., Path], **overrides: object) -> config_mod.Config:
    return config_mod.load(make({"challenge.type": "dns-01", **overrides}))


def _bogus_secret(tmp_path: Path) -> Path:
    path = tmp_path / "wrong.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode())
    path.chmod(0o600)
    return path


def test_dns01_issuance_cleans_up(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    # A name never validated before: Pebble sometimes reuses a valid authorization despite
    # PEBBLE_AUTHZREUSE=0, and then no TXT is published at all.
    name = fresh_name(lab)
    cfg = _dns_config(make_lab_config, **{"host.names": [name]})
    reporter = Reporter(as_json=True)
    _issue(cfg, reporter)
    steps = [(s.name, s.message) for s in reporter.steps]
    assert any(n == "challenge" and "answers TXT" in m for n, m in steps)
    assert any(n == "cleanup" and "removed" in m for n, m in steps)
    assert _eventually(lab, set(), f"_acme-challenge.{name}") == set()


def test_zone_is_found_by_soa_walk(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    # A name of its own (see test_dns01_issuance_cleans_up), two labels below the zone.
    name = f"deep-{uuid.uuid4().hex[:8]}.sub.oe.test"
    cfg = _dns_config(make_lab_config, **{"challenge.dns.zone": None, "host.names": [name]})
    reporter = Reporter(as_json=True)
    _issue(cfg, reporter)
    published = [s for s in reporter.steps if s.name == "challenge" and "zone" in s.data]
    assert published[0].data["zone"] == "oe.test"
    assert _eventually(lab, set(), f"_acme-challenge.{name}") == set()


def test_failure_after_publishing_removes_only_our_values(
        lab: Lab, make_lab_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Someone else's TXT at the same name must survive our cleanup.
    update = lab.update_message()
    update.add(OWNER + ".", 60, "TXT", '"not-ours"')
    assert dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5).rcode() == 0
    assert _eventually(lab, {'"not-ours"'}) == {'"not-ours"'}
    seen: list[set[str]] = []

    def fail_while_published(*args: object, **kwargs: object) -> None:
        seen.append(_txt(lab))
        raise ChallengeError("simulated validation failure")

    monkeypatch.setattr(order, "answer_and_wait", fail_while_published)
    try:
        with pytest.raises(ChallengeError, match="simulated"):
            _issue(_dns_config(make_lab_config))
        assert len(seen[0]) == 2 and '"not-ours"' in seen[0]  # ours was served when asked
        assert _eventually(lab, {'"not-ours"'}) == {'"not-ours"'}
    finally:
        cleanup = lab.update_message()
        cleanup.delete(OWNER + ".", "TXT")
        dns.query.tcp(cleanup, "127.0.0.1", port=lab.info.bind_port, timeout=5)


def test_wrong_tsig_secret(lab: Lab, make_lab_config: Callable[..., Path],
                           tmp_path: Path) -> None:
    cfg = _dns_config(make_lab_config,
                      **{"challenge.dns.tsig_secret_file": str(_bogus_secret(tmp_path))})
    with pytest.raises(DnsUpdateError, match=r"rejected TSIG key 'oeagent-lab'.*BADSIG.*secret"
                       ) as info:
        _issue(cfg)
    secret = cfg.challenge.dns.tsig_secret
    assert secret is not None and base64.b64encode(secret.reveal()).decode() not in str(info.value)
    assert _txt(lab) == set()


def test_unknown_tsig_key_name(lab: Lab, make_lab_config: Callable[..., Path]) -> None:
    cfg = _dns_config(make_lab_config, **{"challenge.dns.tsig_key_name": "nobody-knows"})
    with pytest.raises(DnsUpdateError, match=r"'nobody-knows'.*BADKEY.*tsig_key_name"):
        _issue(cfg)
    assert _txt(lab) == set()


def test_zone_the_key_may_not_update(make_lab_config: Callable[..., Path]) -> None:
    # The server is not authoritative for this zone: NOTAUTH, with what to check.
    cfg = _dns_config(make_lab_config, **{"challenge.dns.zone": "oe.test",
                                          "host.names": ["server.oe.test"],
                                          "challenge.dns.port": 1})
    with pytest.raises(DnsUpdateError, match=r"127\.0\.0\.1:1"):
        _issue(cfg)
