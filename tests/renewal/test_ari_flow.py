"""The whole renew flow with ARI: a TEST DOUBLE of the CA's renewalInfo answers (Pebble 2.4
has no ARI) in front of the real Pebble, which issues the certificates.

The double answers renewalInfo from recorded/constructed bodies; ``supports_ari`` is forced
on so ``replaces`` is sent to Pebble (which, like any Go JSON decoder, ignores the field),
and the ``replaces`` value of every order is recorded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from oeagent import config as config_module
from oeagent import renewstate
from oeagent.ca import ari
from oeagent.ca.ari import AriClient, RenewalInfo, cert_id
from oeagent.renew import renew
from oeagent.report import NullReporter
from oeagent.state import StateDir

from .test_agent import nss_serial, state_serial

pytestmark = pytest.mark.lab


class RenewalInfoDouble:
    def __init__(self) -> None:
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.retry_after = "3600"
        self.asked: list[str] = []
        self.replaces: list[str | None] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        double = self

        def renewal_info(client: AriClient, cert: x509.Certificate,
                         now: dt.datetime | None = None) -> RenewalInfo:
            double.asked.append(cert_id(cert))
            assert double.window is not None
            start, end = double.window
            body = {"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()},
                    "explanationURL": "https://ca.test/why"}
            return RenewalInfo.parse(body, double.retry_after, now or dt.datetime.now(dt.UTC))

        real_new_order = AriClient.new_order

        def new_order(client: AriClient, csr_pem: bytes, profile: str | None = None,
                      replaces: str | None = None) -> Any:
            double.replaces.append(replaces)
            return real_new_order(client, csr_pem, profile=profile, replaces=replaces)

        monkeypatch.setattr(ari.AriClient, "supports_ari", lambda client: True)
        monkeypatch.setattr(ari.AriClient, "renewal_info", renewal_info)
        monkeypatch.setattr(ari.AriClient, "new_order", new_order)


def test_ari_with_renewalinfo_double_schedule_persists_renew_now_sends_replaces(
        make_lab_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session lab (long-lived certificates): the test moves `now` forward by an hour.
    config = config_module.load(make_lab_config({"renewal.ari": True}))
    double = RenewalInfoDouble()
    double.install(monkeypatch)
    now = dt.datetime.now(dt.UTC)
    first = renew(config, NullReporter(), now=now)  # nothing enrolled: issues (no replaces)
    assert first.issued and double.replaces == [None]
    old_serial = state_serial(Path(str(config.source)))
    old_id = cert_id(x509.load_pem_x509_certificate(
        (config.state_dir / "certs" / old_serial / "cert.pem").read_bytes()))

    # A window in the future: not due; window, chosen time and next check are kept on disk.
    double.window = (now + dt.timedelta(seconds=12), now + dt.timedelta(seconds=15))
    result = renew(config, NullReporter(), now=now)
    assert not result.issued and result.extra["schedule"] == "ari"
    record = renewstate.load(StateDir(config.state_dir))
    assert record.ari is not None and double.asked == [old_id]
    assert double.window[0] <= record.ari.chosen <= double.window[1]
    assert record.ari.next_check == now + dt.timedelta(hours=1)
    # "Restart": a fresh call reads the schedule back and does not ask before Retry-After.
    renew(config, NullReporter(), now=now + dt.timedelta(seconds=1))
    assert double.asked == [old_id]
    assert renewstate.load(StateDir(config.state_dir)).ari == record.ari

    # After Retry-After the CA moved the window into the past: "renew now", with `replaces`.
    double.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    later = now + dt.timedelta(hours=1, seconds=1)
    result = renew(config, NullReporter(), now=later)
    assert result.issued and "renewal now" in result.reason
    assert double.asked == [old_id, old_id] and double.replaces == [None, old_id]
    assert nss_serial(Path(str(config.source))) == state_serial(Path(str(config.source))) \
        != old_serial
