"""The web server of the well-known document under faults, for publish's verification."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from tests.faults.harness import Host, before, converges, fault, new_host, run, survived

pytestmark = pytest.mark.lab


@pytest.fixture
def web_host(lab: Lab, tmp_path: Path) -> Iterator[Host]:
    """A host publishing only the well-known document, served by the lab's nginx with the
    host's own certificate."""
    host = new_host(lab, tmp_path, publish=False)
    host.reconfigure({"publish.backends": ["wellknown"], "publish.verify_timeout": 2})
    serve(host)
    result = run(host, "publish")
    assert result.code == 0, str(result)
    try:
        yield host
    finally:
        lab.stop_nginx()
        host.cleanup()


def serve(host: Host, redirect_to: str | None = None, cert: Path | None = None,
          key: Path | None = None) -> None:
    fullchain = host.state / "certs" / host.serial() / "fullchain.pem"
    host.lab.start_nginx(cert or fullchain, key or host.state / "keys" / "current.pem",
                         host.root / "www", redirect_to=redirect_to)


def document(host: Host) -> dict[str, object]:
    text = (host.root / "www" / ".well-known" / "oe-ipsec").read_text()
    parsed: dict[str, object] = json.loads(text)  # whole, never half-written
    return parsed


@fault("nginx down while publishing the document", "publish",
       "the document is written whole (atomic); verification fails (connection refused), "
       "exit 1; rerun with nginx back converges")
def test_nginx_down(web_host: Host, lab: Lab) -> None:
    prior = before(web_host)
    lab.stop_nginx()
    web_host.reconfigure({"publish.backends": ["wellknown"], "publish.verify_timeout": 2,
                          "publish.mode": "testing"})
    result = run(web_host, "publish")
    survived(web_host, result, prior, exit_codes={1, 69}, error="not visible")
    assert document(web_host)["mode"] == "testing"
    serve(web_host)
    converges(web_host, "publish")


@fault("the web server presents the wrong certificate", "publish --verify",
       "verification fails naming the TLS failure, exit 1; nothing is changed")
def test_nginx_wrong_certificate(web_host: Host, lab: Lab) -> None:
    prior = before(web_host)
    pebble = lab.dir / "pebble"
    serve(web_host, cert=pebble / "https-cert.pem", key=pebble / "https-key.pem")
    result = run(web_host, "publish", "--verify")
    survived(web_host, result, prior, exit_codes={1, 69}, error="certificate")
    serve(web_host)
    converges(web_host, "publish")


@fault("the web server redirects the document", "publish --verify",
       "a redirect is refused (not followed), exit 1")
def test_nginx_redirects(web_host: Host) -> None:
    prior = before(web_host)
    serve(web_host, redirect_to="https://attacker.oe.test/.well-known/oe-ipsec")
    result = run(web_host, "publish", "--verify")
    survived(web_host, result, prior, exit_codes={1, 69}, error="redirect")
    serve(web_host)
    converges(web_host, "publish")
