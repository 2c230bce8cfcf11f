"""``unenroll --remove-nss`` sticks: renewals (the timer's ``renew``, the agent's job) leave the
identity out of NSS until the operator runs ``oeagent enroll`` again. Against the lab's
Pebble and the real NSS tools."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lab import Lab
from oeagent import config as config_module
from oeagent import removal
from oeagent.deploy import open_database
from oeagent.state import StateDir
from tests.integration.publish_support import enrolled, oeagent

pytestmark = pytest.mark.lab


def _nss_fingerprints(config_path: Path) -> list[str]:
    cfg = config_module.load(config_path)
    return open_database(cfg).fingerprints(cfg.nss.nickname)


def test_renew_leaves_a_removed_identity_out_until_enroll(lab: Lab, tmp_path: Path) -> None:
    host = enrolled(lab, tmp_path)
    state = StateDir(tmp_path / "state")
    serial = host.fullchain.parent.name
    assert len(_nss_fingerprints(host.config_path)) == 1

    code, doc, err = oeagent(host.config_path, "unenroll", "--remove-nss")
    assert code == 0, (doc.get("error"), err)
    assert doc["nss_removed"] == 1
    assert removal.load(state) is not None
    assert _nss_fingerprints(host.config_path) == []

    # The certificate is current and "not deployed": before the removal was recorded, this
    # renew loaded it into NSS again. Neither it nor --force may put it back or order one.
    for args in (("renew",), ("renew", "--force"), ("renew", "--dry-run")):
        code, doc, err = oeagent(host.config_path, *args)
        assert code == 0, (args, doc.get("error"), err)
        assert doc["issued"] is False and doc["reason"] == "unenrolled", args
        assert doc["schedule"] == "unenrolled"
        assert _nss_fingerprints(host.config_path) == [], args
    assert sorted(p.name for p in (tmp_path / "state" / "certs").iterdir()) == [serial]

    code, doc, _ = oeagent(host.config_path, "status")
    assert code == 0, doc  # out of NSS on purpose: nothing needs attention
    assert doc["unenrolled"]["kept_certificate"] == serial and not doc["attention"]

    # The operator asks again: enroll deploys the kept certificate and ends the removal.
    code, doc, err = oeagent(host.config_path, "enroll")
    assert code == 0, (doc.get("error"), err)
    assert doc["issued"] is False and doc["enrolled_again"] is True
    assert len(_nss_fingerprints(host.config_path)) == 1
    assert not state.removed_path.exists()
    code, doc, err = oeagent(host.config_path, "renew")
    assert code == 0, (doc.get("error"), err)
    assert doc["reason"] != "unenrolled" and doc["issued"] is False
    code, doc, _ = oeagent(host.config_path, "status")
    assert code == 0 and "unenrolled" not in doc


def test_enroll_finishes_a_removal_killed_before_nss_was_touched(
    lab: Lab, tmp_path: Path
) -> None:
    # unenroll records the removal before it purges NSS; killed in between, NSS still holds
    # the certificate and deployed.json still names it. enroll must not answer "nothing to
    # do" and leave the record behind (renewals would then ignore the host for good).
    host = enrolled(lab, tmp_path)
    state = StateDir(tmp_path / "state")
    removal.record(state, dt.datetime.now(dt.UTC))
    code, doc, err = oeagent(host.config_path, "renew")
    assert code == 0 and doc["reason"] == "unenrolled", (doc.get("error"), err)
    code, doc, err = oeagent(host.config_path, "enroll")
    assert code == 0, (doc.get("error"), err)
    assert doc["enrolled_again"] is True and not state.removed_path.exists()
    assert len(_nss_fingerprints(host.config_path)) == 1
