"""pluto, running in a network namespace of its own, has the renewed certificate after
oeagent's ``ipsec whack --rereadcerts``.

pluto gets its own ipsec dir, rundir and control socket under a short /tmp/oe3-* directory,
and the test config's NSS database. The namespace (``oe3-<random>``) has only loopback and
is always deleted. This kernel has no ESP, so no IPsec SA is attempted: the evidence is
pluto's own view, the certificate (serial) and the public key it loaded for the conn, with
that certificate's expiry.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from oeagent import config as config_module

from .conftest import ShortConfig, oeagent

pytestmark = pytest.mark.lab
PLUTO = Path("/usr/libexec/ipsec/pluto")


class NamespacedPluto:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ns = f"oe3-{secrets.token_hex(4)}"
        self.ctl = directory / "run" / "pluto.ctl"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, nss_dir: Path) -> None:
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.dir / "ipsec.secrets").write_text("")
        (self.dir / "ipsec.conf").write_text(
            "config setup\n"
            "conn server\n    left=127.0.0.1\n    leftcert=oeagent\n"
            "    leftid=@server.oe.test\n    leftauth=ecdsa\n    right=%any\n"
            "    rightid=%null\n    rightauth=null\n    auto=add\n")
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        log = (self.dir / "pluto.log").open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, str(PLUTO), "--config",
             str(self.dir / "ipsec.conf"), "--nofork", "--stderrlog", "--rundir",
             str(self.dir / "run"), "--nssdir", str(nss_dir), "--ipsecdir", str(self.dir),
             "--secretsfile", str(self.dir / "ipsec.secrets")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TZ": "UTC"})
        log.close()
        deadline = time.monotonic() + 10
        while not self.ctl.exists():
            assert self.proc.poll() is None, (self.dir / "pluto.log").read_text()
            assert time.monotonic() < deadline, "pluto's control socket did not appear"
            time.sleep(0.05)
        self.whack_conf()

    def whack_conf(self) -> None:
        done = subprocess.run(["ipsec", "addconn", "--config", str(self.dir / "ipsec.conf"),
                               "--ctlsocket", str(self.ctl), "--autoall"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    def whack(self, *args: str) -> str:
        done = subprocess.run(["ipsec", "whack", "--ctlsocket", str(self.ctl), *args],
                              capture_output=True, text=True, check=True)
        return done.stdout

    def loaded(self) -> tuple[str, list[str]]:
        """(serial pluto lists for the nickname, expiries of the keys it loaded for @server)."""
        certs = self.whack("--listcerts")
        found = re.search(r'End certificate "oeagent" - SN: 0x([0-9a-f]+)', certs)
        assert found, certs
        keys = self.whack("--listpubkeys")
        untils = re.findall(r"until (\w{3} \d{2} \d{2}:\d{2}:\d{2} \d{4}).*\n.*'@server\.oe\.test'",
                            keys)
        return format(int(found.group(1), 16), "x"), untils

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


@pytest.fixture
def pluto_ns(short_dir: Path) -> Iterator[NamespacedPluto]:
    if os.geteuid() != 0 or not PLUTO.exists() or shutil.which("ip") is None:
        pytest.skip("needs root, libreswan's pluto and iproute2")
    pluto = NamespacedPluto(short_dir / "p")
    try:
        yield pluto
    finally:
        pluto.stop()
    assert pluto.ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True, check=False).stdout


def _pluto_time(cert: x509.Certificate) -> str:
    return cert.not_valid_after_utc.astimezone(dt.UTC).strftime("%b %d %H:%M:%S %Y")


def serial_and_cert(config: Path) -> tuple[str, x509.Certificate]:
    cfg = config_module.load(config)
    serial = (cfg.state_dir / "current.json").read_text().split('"serial": "')[1].split('"')[0]
    pem = (cfg.state_dir / "certs" / serial / "cert.pem").read_bytes()
    return serial, x509.load_pem_x509_certificate(pem)


def test_pluto_in_a_namespace_serves_the_renewed_certificate_after_rereadcerts(
        short_config: ShortConfig, pluto_ns: NamespacedPluto) -> None:
    config = short_config({"pluto.ctlsocket": str(pluto_ns.ctl)})
    assert oeagent(config, "enroll").returncode == 0
    pluto_ns.start(config_module.load(config).nss.directory)
    first_serial, first = serial_and_cert(config)
    serial, untils = pluto_ns.loaded()
    assert serial == first_serial and untils and set(untils) == {_pluto_time(first)}

    time.sleep(1.1)  # pluto shows expiries to the second: make the new one differ
    done = oeagent(config, "renew", "--force")
    assert done.returncode == 0, done.stderr
    assert "pluto: told it to reread its certificates" in done.stdout
    new_serial, new = serial_and_cert(config)
    assert new_serial != first_serial
    serial, untils = pluto_ns.loaded()
    # pluto now holds the new certificate, and the key it uses for the conn is the new one's.
    assert serial == new_serial
    assert set(untils) == {_pluto_time(new)} != {_pluto_time(first)}
    status = oeagent(config, "status", "--json")
    assert '"has_certificate": true' in status.stdout, status.stdout
