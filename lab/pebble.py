"""Pebble, Let's Encrypt's test CA, with real http-01 and dns-01 validation against the lab DNS.

Pebble makes a new root (and intermediate) on every start, so the lab fetches them from the
management interface after each start and rewrites pebble-root.pem / pebble-intermediate.pem.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests


def write_config(
    pebble_dir: Path,
    *,
    acme_port: int,
    management_port: int,
    http_port: int,
    tls_port: int,
    cert: Path,
    key: Path,
    validity_seconds: int | None,
    address: str = "127.0.0.1",
    eab_keys: Mapping[str, str] | None = None,
    domain_blocklist: Sequence[str] = (),
) -> Path:
    """Pebble's JSON config. ``eab_keys`` (key id -> base64url HMAC key): External Account
    Binding is then required for every new account; ``domain_blocklist``: names (and the
    names below them) Pebble refuses with ``rejectedIdentifier``."""
    pebble_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {
        "listenAddress": f"{address}:{acme_port}",
        "managementListenAddress": f"{address}:{management_port}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        settings["externalAccountMACKeys"] = dict(eab_keys)
    if domain_blocklist:
        settings["domainBlocklist"] = list(domain_blocklist)
    if validity_seconds is not None:
        settings["certificateValidityPeriod"] = validity_seconds
    conf = pebble_dir / "pebble-config.json"
    conf.touch(mode=0o600, exist_ok=True)
    conf.chmod(0o600)  # it may hold EAB keys
    conf.write_text(json.dumps({"pebble": settings}, indent=2) + "\n")
    return conf


def write_eab_key(path: Path) -> str:
    """A fresh 256-bit EAB HMAC key, written to ``path`` (0600) as a CA hands it out:
    unpadded base64url (what Pebble's externalAccountMACKeys takes, and oeagent reads)."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(key + "\n")
    return key


def argv(conf: Path, dns_port: int, address: str = "127.0.0.1") -> list[str]:
    return ["pebble", "-config", str(conf), "-dnsserver", f"{address}:{dns_port}"]


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Real validation, no artificial sleeps, a fresh authorization for every order; ``extra``
    (fault injection: ``PEBBLE_VA_SLEEPTIME``, ``PEBBLE_WFE_NONCEREJECT``...) on top. A
    ``PEBBLE_VA_SLEEPTIME`` drops the lab's ``PEBBLE_VA_NOSLEEP``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEBBLE_")}
    env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0"})
    if extra:
        if "PEBBLE_VA_SLEEPTIME" in extra:
            env.pop("PEBBLE_VA_NOSLEEP")
        env.update(extra)
    # Pebble's resolver and HTTP client must never be sent through a proxy.
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    return env


def _session(ca_bundle: Path) -> requests.Session:
    session = requests.Session()
    session.verify = str(ca_bundle)
    session.trust_env = False  # no proxies: the lab only talks to loopback
    return session


def directory_ready(url: str, ca_bundle: Path) -> bool:
    with _session(ca_bundle) as session:
        reply = session.get(url, timeout=1)
        return reply.status_code == 200 and "newOrder" in reply.json()


def fetch_pem(url: str, ca_bundle: Path) -> str:
    with _session(ca_bundle) as session:
        reply = session.get(url, timeout=5)
        reply.raise_for_status()
        text = reply.text
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{url} did not return a PEM certificate")
    return text if text.endswith("\n") else text + "\n"
