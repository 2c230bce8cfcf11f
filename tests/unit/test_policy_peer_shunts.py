"""Per-peer conns: ``enforce`` holds and drops, ``testing`` passes traffic through.

A ``testing`` advertisement means "try, but never lose traffic": the conn must not hold
packets while IKE is tried (``negotiationshunt=hold`` held them up to retransmit-timeout on
every trap) nor drop them when it fails, and since pluto 4.10 applies those shunts only to
opportunistic conns, the testing peer is a one-address group. The rendered file goes
through the real ``ipsec addconn --checkconfig``.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from oeagent.policy import install, model, render


def _policy(peer_updown: str = "") -> model.Policy:
    return model.build(
        null_ranges=["0.0.0.0/0"], clear=[], block=[], never_locked_out=[], decisions=[],
        static_peers=[("enforced.oe.test", "198.51.100.20", "ecdsa", "enforce"),
                      ("tried.oe.test", "198.51.100.21", "rsasig", "testing")],
        responder=None, peer_updown=peer_updown,
    )


def _settings(conf: str, name: str) -> list[str]:
    return render.conn_blocks(conf)[name].splitlines()


def test_testing_peers_pass_traffic_enforce_peers_hold_and_drop() -> None:
    files = render.render(_policy(), dt.datetime.now(dt.UTC))
    conf = files[render.CONF]
    enforced = _settings(conf, "oeagent-peer-enforced_oe_test-1")
    tried = _settings(conf, "oeagent-peer-tried_oe_test-1")
    assert "negotiationshunt=hold" in enforced and "failureshunt=drop" in enforced
    assert "negotiationshunt=passthrough" in tried and "failureshunt=passthrough" in tried
    # pluto 4.10 applies the shunts only to opportunistic conns: the testing peer is a
    # group of its one address; the enforce peer stays a static conn (precedence 1).
    assert "right=198.51.100.20" in enforced
    assert "policies/oeagent-peer-enforced_oe_test-1" not in files
    assert "right=%opportunisticgroup" in tried and "rightid=@tried.oe.test" in tried
    assert files["policies/oeagent-peer-tried_oe_test-1"].splitlines()[1:] == [
        "198.51.100.21/32"]
    for settings in (enforced, tried):
        assert sum(s.startswith("negotiationshunt=") for s in settings) == 1
        assert sum(s.startswith("failureshunt=") for s in settings) == 1


@pytest.mark.skipif(shutil.which("ipsec") is None, reason="libreswan is not installed")
def test_addconn_checkconfig_accepts_both_modes() -> None:
    # Raises PolicyError on any complaint on stderr (addconn exits 0 on bad values).
    install.checkconfig(render.render(_policy(), dt.datetime.now(dt.UTC)))


def test_peer_conns_run_no_updown_by_default_and_the_configured_one_quoted() -> None:
    now = dt.datetime.now(dt.UTC)
    conf = render.render(_policy(), now)[render.CONF]
    for name in ("oeagent-peer-enforced_oe_test-1", "oeagent-peer-tried_oe_test-1"):
        assert "leftupdown=%disabled" in _settings(conf, name)
    # The groups keep pluto's default (their routing is a handful of instances).
    assert not any(s.startswith("leftupdown=")
                   for s in _settings(conf, "oeagent-private-or-clear"))
    conf = render.render(_policy("/usr/local/sbin/oe-updown --log"), now)[render.CONF]
    assert 'leftupdown="/usr/local/sbin/oe-updown --log"' in _settings(
        conf, "oeagent-peer-enforced_oe_test-1")


@pytest.mark.skipif(shutil.which("ipsec") is None, reason="libreswan is not installed")
def test_addconn_checkconfig_accepts_a_configured_updown() -> None:
    install.checkconfig(render.render(_policy("ipsec _updown --route yes"),
                                      dt.datetime.now(dt.UTC)))


def test_enforce_peers_and_only_they_fall_back_to_drop() -> None:
    policy = _policy()
    # The testing peer may fall back to NULL OE or clear; the enforce peer never does.
    assert policy.groups[model.ENFORCED] == ["198.51.100.20/32"]
    files = render.render(policy, dt.datetime.now(dt.UTC))
    guard = _settings(files[render.CONF], model.ENFORCED)
    # Any source, so it is not the per-peer conn's kernel policy and loses to it.
    for setting in ("type=drop", "authby=never", "right=%group", "leftsubnet=0.0.0.0/0",
                    "leftupdown=%disabled", "auto=ondemand"):
        assert setting in guard
    assert files[f"policies/{model.ENFORCED}"].splitlines()[1:] == ["198.51.100.20/32"]
