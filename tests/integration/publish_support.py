"""Helpers for the publishing tests: hosts with their own names, enrolled identities, DNS reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.query
import dns.rcode
import dns.rdatatype
from cryptography.hazmat.primitives.asymmetric import ec

from lab import Lab
from oeagent import config as config_module
from oeagent import keys
from oeagent.advertisement import Advertisement
from oeagent.enroll import enroll
from oeagent.publish.base import Desired
from oeagent.report import NullReporter

REPO = Path(__file__).resolve().parents[2]


def fresh_name(lab: Lab, zone: str = "oe.test") -> str:
    """A host name of its own, with an explicit A record: once records of ours exist at the
    name, the zone's wildcard no longer answers its A query."""
    name = f"p{uuid.uuid4().hex[:10]}.{zone}"
    update = lab.update_message(zone)
    update.replace(name + ".", 60, "A", "127.0.0.1")
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR
    return name


def send_update(lab: Lab, zone: str, build: Any) -> None:
    update = lab.update_message(zone)
    build(update)
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())


def authoritative(lab: Lab, name: str, rdtype: str) -> dict[str, int]:
    """What BIND itself holds at name/type: value -> TTL."""
    reply = lab.dig(name, rdtype, tcp=True)
    out: dict[str, int] = {}
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            out.update({r.to_text(): rrset.ttl for r in rrset})
    return out


def validated(lab: Lab, name: str, rdtype: str) -> tuple[bool, set[str]]:
    """Through unbound: (AD bit, values)."""
    reply = lab.dig(name, rdtype, resolver=True)
    values = {r.to_text() for rrset in reply.answer
              if rrset.rdtype == dns.rdatatype.from_text(rdtype) for r in rrset}
    return bool(reply.flags & dns.flags.AD), values


def soa_serial(lab: Lab, zone: str = "oe.test") -> int:
    reply = lab.dig(zone, "SOA", tcp=True)
    return next(r.serial for rrset in reply.answer if rrset.rdtype == dns.rdatatype.SOA
                for r in rrset)


def settled_soa_serial(lab: Lab, zone: str = "oe.test", quiet: float = 0.5) -> int:
    """The serial once the zone stopped changing: an inline-signing BIND bumps the signed
    zone's serial a few ms after it acknowledged an update (an earlier test's, say)."""
    serial = soa_serial(lab, zone)
    deadline = time.monotonic() + 10
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = soa_serial(lab, zone)
        if now != serial:
            serial, stable_since = now, time.monotonic()
    return serial


def our_records(lab: Lab, name: str) -> dict[str, dict[str, int]]:
    return {
        "txt": authoritative(lab, f"_oe.{name}", "TXT"),
        "tlsa500": authoritative(lab, f"_500._udp.{name}", "TLSA"),
        "tlsa4500": authoritative(lab, f"_4500._udp.{name}", "TLSA"),
        "ipseckey": authoritative(lab, name, "IPSECKEY"),
    }


def desired(fqdn: str, *private: ec.EllipticCurvePrivateKey, mode: str = "enforce") -> Desired:
    public = tuple(k.public_key() for k in private) if mode != "none" else ()
    advert = Advertisement(fqdn, "ecdsa", tuple(keys.spki_sha256(k) for k in public),
                           mode=mode, max_age=300)
    return Desired(advert, public, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Identity:
    name: str
    root: Path
    config_path: Path

    @property
    def config(self) -> config_module.Config:
        return config_module.load(self.config_path)

    @property
    def fullchain(self) -> Path:
        serial = json.loads((self.root / "state" / "current.json").read_text())["serial"]
        return self.root / "state" / "certs" / serial / "fullchain.pem"

    @property
    def key(self) -> Path:
        return self.root / "state" / "keys" / "current.pem"

    def reconfigure(self, overrides: Mapping[str, Any], name: str = "oeagent.toml") -> Path:
        return write_config(lab_of(self), self.root, self.name, overrides, name)


_LABS: dict[Path, Lab] = {}


def lab_of(identity: Identity) -> Lab:
    return _LABS[identity.root]


def write_config(lab: Lab, root: Path, name: str, overrides: Mapping[str, Any] | None,
                 file: str = "oeagent.toml") -> Path:
    return lab.write_config(root / file, {"host.names": [name], **(overrides or {})}, root=root)


def enrolled(lab: Lab, root: Path, name: str | None = None,
             overrides: Mapping[str, Any] | None = None) -> Identity:
    """A host enrolled against the lab (in-process), publishing off unless ``overrides``
    turn it on."""
    name = name or fresh_name(lab)
    path = write_config(lab, root, name, {"publish.backends": []})
    enroll(config_module.load(path), NullReporter())
    _LABS[root] = lab
    if overrides:
        path = write_config(lab, root, name, overrides)
    return Identity(name, root, path)


def oeagent(config_path: Path, *args: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config_path), "--json", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        document = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        document = {"raw": proc.stdout}
    return proc.returncode, document, proc.stderr


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def tlsa_pin(value: str) -> str:
    return value.split()[-1].lower()

