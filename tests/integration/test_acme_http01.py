"""http-01: the standalone responder on its own, then real issuance against the lab's Pebble."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509

from lab import Lab
from oeagent import config as config_mod
from oeagent.ca import http01, issue_certificate, order
from oeagent.config import HttpChallengeConfig
from oeagent.errors import ChallengeError
from oeagent.keys import generate_key, same_key
from oeagent.report import Reporter
from oeagent.state import StateDir
from tests.integration.publish_support import fresh_name


def _issue(cfg: config_mod.Config, reporter: Reporter | None = None) -> x509.Certificate:
    key = generate_key("ecdsa-p256")
    issued = issue_certificate(cfg, StateDir(cfg.state_dir), key, reporter or Reporter(True))
    assert same_key(issued.cert, key) and issued.chain
    assert issued.fullchain_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    return issued.cert


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*ext.get_values_for_type(x509.DNSName),
            *(str(a) for a in ext.get_values_for_type(x509.IPAddress))}


# -- the responder alone (no lab needed) ---------------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::"])
def test_responder_serves_only_current_tokens(address: str) -> None:
    cfg = HttpChallengeConfig(listen_address=address, port=0)
    with http01.standalone(cfg, {"tok-1_A": "tok-1_A.thumb"}) as port:
        host = "127.0.0.1" if address in ("127.0.0.1", "::") else "[::1]"
        base = f"http://{host}:{port}"
        ok = requests.get(f"{base}/.well-known/acme-challenge/tok-1_A", timeout=5)
        assert (ok.status_code, ok.text) == (200, "tok-1_A.thumb")
        assert ok.headers["Content-Type"] == "text/plain"
        for path in ("/.well-known/acme-challenge/other", "/.well-known/acme-challenge/",
                     "/", "/.well-known/acme-challenge/../../etc/passwd"):
            assert requests.get(base + path, timeout=5).status_code == 404
    with pytest.raises(requests.ConnectionError):  # shut down afterwards
        requests.get(f"{base}/.well-known/acme-challenge/tok-1_A", timeout=2)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = HttpChallengeConfig(listen_address="127.0.0.1", port=port)
        with pytest.raises(ChallengeError, match=r"127\.0\.0\.1:\d+ .*in use.*webroot"), \
                http01.standalone(cfg, {"t": "t.x"}):
            pass


def test_webroot_refuses_a_well_known_symlinked_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "www", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / ".well-known").symlink_to(outside)
    with pytest.raises(ChallengeError, match="outside the webroot"), \
            http01.webroot(root, {"tok": "tok.x"}):
        pass
    assert list(outside.iterdir()) == []


def test_bad_tokens_never_reach_the_filesystem(tmp_path: Path) -> None:
    with pytest.raises(ChallengeError, match="not base64url"), \
            http01.webroot(tmp_path, {"../escape": "x"}):
        pass
    assert list(tmp_path.iterdir()) == []


# -- against Pebble -------------------------------------------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("listen", ["127.0.0.1", "::"])
def test_standalone_issuance(lab: Lab, make_lab_config: Callable[..., Path], listen: str) -> None:
    # Names never validated before: Pebble sometimes reuses a valid authorization despite
    # PEBBLE_AUTHZREUSE=0, and then no challenge is answered at all.
    names = {fresh_name(lab), fresh_name(lab)}
    cfg = config_mod.load(make_lab_config({"host.names": sorted(names),
                                           "challenge.http.listen_address": listen}))
    reporter = Reporter(as_json=True)
    cert = _issue(cfg, reporter)
    assert _sans(cert) == names
    names = [s.name for s in reporter.steps]
    assert names == ["account", "order", "challenge", "challenge", "validated", "validated",
                     "cleanup", "finalized", "issued"]


@pytest.mark.lab
def test_ip_identifier(make_lab_config: Callable[..., Path]) -> None:
    cfg = config_mod.load(make_lab_config({"host.addresses": ["127.0.0.1"]}))
    cert = _issue(cfg)
    assert _sans(cert) == {"server.oe.test", "127.0.0.1"}
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.lab
def test_webroot_issuance_leaves_nothing_behind(lab: Lab,
                                                make_lab_config: Callable[..., Path]) -> None:
    cfg = config_mod.load(make_lab_config({"challenge.http.mode": "webroot"}))
    webroot = cfg.challenge.http.webroot
    assert webroot is not None
    with lab.serve_webroot(webroot):
        _issue(cfg)
    assert list(webroot.iterdir()) == []


@pytest.mark.lab
def test_nobody_answering_names_the_identifier(make_lab_config: Callable[..., Path]) -> None:
    # webroot mode but no web server: Pebble's connection is refused.
    cfg = config_mod.load(make_lab_config({"challenge.http.mode": "webroot"}))
    webroot = cfg.challenge.http.webroot
    assert webroot is not None
    (webroot / "index.html").write_text("keep me")
    with pytest.raises(ChallengeError, match=r"http-01 validation of server\.oe\.test failed: "
                                             r"the CA said: .*\(connection\)") as info:
        _issue(cfg)
    assert "\n" not in str(info.value)
    assert [p.name for p in webroot.iterdir()] == ["index.html"]


@pytest.mark.lab
def test_responder_stops_when_validation_fails(make_lab_config: Callable[..., Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_mod.load(make_lab_config())

    def boom(*args: object, **kwargs: object) -> None:
        raise ChallengeError("simulated failure while the CA looks")

    monkeypatch.setattr(order, "answer_and_wait", boom)
    with pytest.raises(ChallengeError, match="simulated"):
        _issue(cfg)
    # The port is free again: a new responder can bind it at once.
    with http01.standalone(dataclasses.replace(cfg.challenge.http), {"t": "t.x"}):
        pass
    with contextlib.suppress(OSError), socket.create_connection(
            ("127.0.0.1", cfg.challenge.http.port), timeout=1):
        pytest.fail("the responder is still listening")
