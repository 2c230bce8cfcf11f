"""ACME accounts against the lab's Pebble: create, reuse, find again, trust and ToS errors."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from acme import client as acme_client
from acme import messages

from oeagent import config as config_mod
from oeagent.ca import issue_certificate, order
from oeagent.ca.account import ensure_account
from oeagent.ca.client import get_directory, make_network
from oeagent.errors import AcmeError
from oeagent.keys import generate_key
from oeagent.report import Reporter
from oeagent.state import StateDir


def _account(cfg: config_mod.Config) -> tuple[str, bool, Reporter]:
    state = StateDir(cfg.state_dir)
    net = make_network(cfg.acme)
    client = acme_client.ClientV2(get_directory(cfg.acme, net), net)
    reporter = Reporter(as_json=True)
    account = ensure_account(cfg.acme, state, client, reporter)
    return account.url, account.created, reporter


@pytest.mark.lab
def test_account_created_then_reused_then_found_again(
        make_lab_config: Callable[..., Path]) -> None:
    cfg = config_mod.load(make_lab_config())
    url, created, reporter = _account(cfg)
    assert created and url.startswith("https://")
    assert reporter.steps[-1].message == "created an ACME account"

    account_dir = StateDir(cfg.state_dir).account_dir(cfg.acme.directory)
    for name in ("key.pem", "account.json"):
        assert stat.S_IMODE((account_dir / name).stat().st_mode) == 0o600
    record = json.loads((account_dir / "account.json").read_text())
    assert record == {"directory": cfg.acme.directory, "url": url,
                      "contact": ["mailto:hostmaster@oe.test"]}

    again, created, _ = _account(cfg)
    assert (again, created) == (url, False)

    # An interrupted first run: the key was written, account.json was not. The CA still
    # knows the key's account, so the rerun adopts it instead of registering a second one.
    (account_dir / "account.json").unlink()
    found, created, reporter = _account(cfg)
    assert (found, created) == (url, False)
    assert "existing" in reporter.steps[-1].message
    assert json.loads((account_dir / "account.json").read_text())["url"] == url


@pytest.mark.lab
def test_terms_of_service_must_be_agreed(make_lab_config: Callable[..., Path]) -> None:
    cfg = config_mod.load(make_lab_config({"acme.agree_tos": False}))
    with pytest.raises(AcmeError, match=r"terms of service at \S+; .*acme\.agree_tos"):
        _account(cfg)


@pytest.mark.lab
def test_untrusted_ca_certificate_is_a_clear_error(make_lab_config: Callable[..., Path]) -> None:
    # Without ca_bundle the system store is used, which does not know the lab's HTTPS CA.
    cfg = config_mod.load(make_lab_config({"acme.ca_bundle": None}))
    with pytest.raises(AcmeError, match=r"not trusted.*acme\.ca_bundle") as info:
        issue_certificate(cfg, StateDir(cfg.state_dir), generate_key("ecdsa-p256"),
                          Reporter(as_json=True))
    assert "\n" not in str(info.value)


@pytest.mark.lab
def test_unreachable_ca(make_lab_config: Callable[..., Path]) -> None:
    cfg = config_mod.load(make_lab_config({"acme.directory": "https://127.0.0.1:1/dir"}))
    with pytest.raises(AcmeError, match=r"CA at https://127\.0\.0\.1:1 is unreachable"):
        issue_certificate(cfg, StateDir(cfg.state_dir), generate_key("ecdsa-p256"),
                          Reporter(as_json=True))


def _directory(profiles: dict[str, str] | None) -> messages.Directory:
    meta = {"profiles": profiles} if profiles is not None else {}
    return messages.Directory.from_json({"newOrder": "https://ca.test/new-order", "meta": meta})


def test_profile_choice_without_a_ca() -> None:
    reporter = Reporter(as_json=True)
    offered = _directory({"classic": "90 days", "shortlived": "160 hours"})
    assert order.choose_profile(None, offered, reporter) is None
    assert order.choose_profile("shortlived", offered, reporter) == "shortlived"
    with pytest.raises(AcmeError, match=r"'tlsserver' is not offered.*classic \(90 days\), "
                                        r"shortlived \(160 hours\)"):
        order.choose_profile("tlsserver", offered, reporter)
    assert reporter.steps == []
    assert order.choose_profile("classic", _directory(None), reporter) is None
    assert reporter.steps[0].data == {"level": "warning"}


@pytest.mark.lab
def test_profile_ignored_with_a_warning_when_the_ca_has_none(
        make_lab_config: Callable[..., Path]) -> None:
    # Pebble 2.4 advertises no profiles: a configured profile is reported and skipped.
    cfg = config_mod.load(make_lab_config({"acme.profile": "shortlived"}))
    reporter = Reporter(as_json=True)
    issue_certificate(cfg, StateDir(cfg.state_dir), generate_key("ecdsa-p256"), reporter)
    warning = [s for s in reporter.steps if s.name == "profile"]
    assert warning and "offers no profiles" in warning[0].message
