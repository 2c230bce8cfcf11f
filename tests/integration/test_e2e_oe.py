"""End to end: real pluto peers in network namespaces prove what oeagent produced.

One scenario (``lab.e2e.Scenario``: the lab in its own namespace, five hosts each with its
own pluto, every oeagent command run inside its host) is started once for this module; the
tests follow the table of issue 6 in order, the ones that change the server (renew,
unenroll) last. Evidence comes from pluto: its log lines, ``whack --briefstatus``,
``--trafficstatus``, ``--shuntstatus``. Where the kernel has no ESP (this machine kind), the
data-plane checks are skipped with the probe's reason; the IKE SA is still proven.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.e2e import Scenario, esp_probe, listen_udp

pytestmark = pytest.mark.lab

AUTHENTICATED = (r"established IKE SA; authenticated peer .* using peer certificate "
                 r"'@{fqdn}' issued by CA 'CN=Pebble Intermediate CA")
NULL = r"established IKE SA; authenticated peer using authby=null"


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    if shutil.which("ipsec") is None or shutil.which("pebble") is None:
        pytest.skip("libreswan or pebble not installed (run `make deps`)")
    directory = Path(tempfile.mkdtemp(prefix="oe6-", dir="/tmp"))
    try:
        with Scenario(directory) as scenario:
            yield scenario
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def esp(sc: Scenario) -> tuple[bool, str]:
    return esp_probe(sc.hosts["client"])


def data_plane(sc: Scenario, esp: tuple[bool, str], src: str, dst: str) -> None:
    """With ESP: the Child SA is listed by --trafficstatus and a datagram goes through."""
    supported, reason = esp
    if not supported:
        pytest.skip(reason)
    out = listen_udp(sc, dst, 5002)
    sc.initiate(src, dst)
    sc.send_packet(src, dst, 5002)
    assert sc.hosts[dst].address in sc.hosts[src].pluto.whack("--trafficstatus")
    deadline = time.monotonic() + 5
    while sc.hosts[src].address not in out.read_text():
        assert time.monotonic() < deadline, "the datagram did not arrive through the Child SA"
        time.sleep(0.1)


def test_client_to_server_authenticates_the_certificate_found_through_dnssec(sc: Scenario) -> None:
    client = sc.hosts["client"]
    since = sc.log_offset("client")
    sc.initiate("client", "server")
    line = sc.wait_log("client", AUTHENTICATED.format(fqdn="server.oe.test"), since)
    assert sc.peer_conn("server.oe.test", sc.hosts["server"].address) in line
    assert client.pluto.ike_sa_counts()["authenticated"] >= 1
    # The server saw an anonymous (NULL) client, and answered with its certificate.
    sc.wait_log("server", rf'"oeagent-responder".* {client.address} #\d+: responder ' + NULL)


def test_client_to_server_data_plane(sc: Scenario, esp: tuple[bool, str]) -> None:
    data_plane(sc, esp, "client", "server")


def test_client_to_webonly_packet_triggered_authenticates_via_the_https_document(
    sc: Scenario,
) -> None:
    """No whack here: one UDP datagram hits the per-peer trap and pluto starts IKE itself."""
    since = sc.log_offset("client")
    sc.send_packet("client", "webonly")
    webonly = sc.hosts["webonly"]
    sc.wait_log("client", rf"initiate on-demand for packet .*->{webonly.address}:5001.*UDP|"
                          rf"initiate on-demand for packet .*UDP.*{webonly.address}", since)
    line = sc.wait_log("client", AUTHENTICATED.format(fqdn="web.insecure.oe.test"), since)
    assert sc.peer_conn("web.insecure.oe.test", webonly.address) in line


def test_client_to_webonly_data_plane(sc: Scenario, esp: tuple[bool, str]) -> None:
    data_plane(sc, esp, "client", "webonly")


def test_client_to_plain_is_null_oe(sc: Scenario) -> None:
    since = sc.log_offset("client")
    sc.initiate("client", "plain")
    line = sc.wait_log("client", NULL, since)
    assert "oeagent-private-or-clear" in line and sc.hosts["plain"].address in line
    assert sc.hosts["client"].pluto.ike_sa_counts()["anonymous"] >= 1
    assert sc.hosts["plain"].pluto.ike_sa_counts()["anonymous"] >= 1
    # Not clear: no pass shunt to plain (without ESP the trap holds traffic instead).
    shunts = sc.hosts["client"].pluto.whack("--shuntstatus")
    assert not any(sc.hosts["plain"].address in ln and "%pass" in ln
                   for ln in shunts.splitlines()), shunts


def test_client_to_plain_data_plane(sc: Scenario, esp: tuple[bool, str]) -> None:
    data_plane(sc, esp, "client", "plain")


def test_plain_to_server_the_server_accepts_a_null_ike_sa(sc: Scenario) -> None:
    plain = sc.hosts["plain"]
    since = sc.log_offset("server")
    plain_since = sc.log_offset("plain")
    sc.initiate("plain", "server")
    sc.wait_log("server", rf"{plain.address} #\d+: responder " + NULL, since)
    # The responder conn answers a NULL-only initiator with NULL too (no certificate it
    # could not check): plain's side of the IKE SA is NULL-authenticated as well.
    line = sc.wait_log("plain", NULL, plain_since)
    assert "private-or-clear" in line and sc.hosts["server"].address in line


def test_client_to_impostor_at_an_advertised_address_gets_no_sa_and_drops(sc: Scenario) -> None:
    """server.oe.test (enforce) has a second A record at the impostor, which holds a valid
    Pebble certificate for impostor.oe.test: pluto refuses it, nothing goes out in clear."""
    client, impostor = sc.hosts["client"], sc.hosts["impostor"]
    conn = sc.peer_conn("server.oe.test", impostor.address)
    received = listen_udp(sc, "impostor", 5003)
    since = sc.log_offset("client")
    sc.initiate("client", "impostor")
    sc.wait_log("client", rf'"{conn}" #\d+: X509: authentication failed; peer certificate '
                          r"subjectAltName extension does not match ID_FQDN 'server.oe.test'",
                since)
    assert not re.search(rf'"{conn}".*established IKE SA', client.pluto.log_text()[since:])
    status = client.pluto.whack("--status")
    assert not re.search(rf'"{conn}".*STATE_V2_ESTABLISHED_IKE_SA', status), status
    # A packet to the impostor: the trap (ESP template, no pass shunt) keeps it; it never
    # arrives in clear.
    sc.send_packet("client", "impostor", 5003)
    time.sleep(2)
    assert client.address not in received.read_text()
    shunts = client.pluto.whack("--shuntstatus")
    assert not any(impostor.address in ln and "%pass" in ln for ln in shunts.splitlines()), shunts
    xfrm = client.host.run(["ip", "xfrm", "policy"]).stdout
    blocks = [b for b in ("\n" + xfrm).split("\nsrc ")
              if b.startswith(f"{client.address}/32 dst {impostor.address}/32")]
    assert blocks and all("proto esp" in b for b in blocks), xfrm


def _pluto_serial(sc: Scenario) -> str:
    """The serial of the certificate the server's pluto holds (``oeagent status``, which
    reads ``whack --listcerts``), checked to be the one oeagent deployed."""
    out = sc.oeagent("server", "--json", "status", check=False).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["pluto"].get("has_certificate"), (report["pluto"], sc.hosts["server"].pluto.log_text()[-3000:])
    return str(report["pluto"]["serial"])


def test_client_to_server_after_renewal_uses_the_new_certificate(sc: Scenario) -> None:
    """Also the regression test for the bug this suite found: pluto 4.10 died (SIGSEGV) on
    the `whack --rereadcerts` oeagent sent after every deploy, because an enrolled OE host
    holds both a certificate conn and OE group instances (libreswan issue #1005)."""
    server, client = sc.hosts["server"], sc.hosts["client"]
    old = _pluto_serial(sc)
    done = sc.oeagent_json("server", "renew", "--force")
    assert done["ok"], done
    time.sleep(0.5)
    assert sc.pluto_alive("server"), server.pluto.log_text()[-3000:]
    new = _pluto_serial(sc)  # pluto holds the new serial
    assert new != old
    conn = sc.peer_conn("server.oe.test", server.address)
    sc.forget_sas("client", conn)  # the next IKE SA is a new one
    since = sc.log_offset("client")
    server_since = sc.log_offset("server")
    sc.initiate("client", "server")
    line = sc.wait_log("client", AUTHENTICATED.format(fqdn="server.oe.test"), since)
    assert conn in line
    # The new IKE SA was answered after the renewal, with the only certificate pluto has.
    sc.wait_log("server", rf"{client.address} #\d+: responder " + NULL, server_since)
    assert _pluto_serial(sc) == new


def test_client_to_server_after_unenroll_falls_back_to_null_oe(sc: Scenario) -> None:
    server, client = sc.hosts["server"], sc.hosts["client"]
    # 1. mode none: TLSA and IPSECKEY withdrawn, the TXT says none; the client releases it.
    sc.oeagent("server", "unenroll", "--remove-nss")
    assert sc.pluto_alive("server")
    found = {p["peer"]: p for p in sc.discover("server.oe.test")}
    assert found["server.oe.test"]["status"] == "none", found
    # 2. withdrawn: the markers go too; the peer stays released.
    sc.oeagent("server", "unenroll", "--purge")
    found = {p["peer"]: p for p in sc.discover("server.oe.test")}
    assert found["server.oe.test"]["status"] == "none", found
    sc.oeagent("server", "policy")   # no certificate any more: no responder conn
    sc.oeagent("client", "policy")   # no per-peer conn any more: NULL OE for the server
    assert "server.oe.test" not in (client.pluto.ipsec_dir / "oeagent.conf").read_text()
    since = sc.log_offset("client")
    sc.initiate("client", "server")
    line = sc.wait_log("client", NULL, since)
    assert "oeagent-private-or-clear" in line and server.address in line

