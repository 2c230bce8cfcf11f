"""An enforce peer's traffic never falls to NULL OE or clear, not even while its conn is
replaced (a change, a renewal) or not loaded yet.

pluto 4.10 cannot replace a conn in place: ``addconn`` deletes and re-adds it, and
``--route`` puts its trap back afterwards. Without the ``oeagent-enforced`` drop group a
datagram sent in between matched the NULL group's trap, and the client got a NULL IKE SA
with a peer that had promised authenticated OE (seen with the policy benchmark: a renewal
on an enrolled host with 10,000 peer conns left them without their trap for a minute).
Real plutos in namespaces, real datagrams through the kernel's policies.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from lab import Lab
from lab.netns import in_namespace
from lab.pluto import Pluto
from oeagent import libreswan, proc
from oeagent import pluto as pluto_module
from tests.integration.test_policy import (
    _node_config,
    _policy_cli,
    _responder,
    _wait_for,
    plutos,
    remember_peer,
)

pytestmark = pytest.mark.lab
PEER_CONN = "oeagent-peer-server_oe_test-1"


def _policies_to(node: Pluto, peer: str) -> list[str]:
    """The kernel's outbound policies towards ``peer``, one line each."""
    text = node.host.run(["ip", "xfrm", "policy", "list", "dir", "out"]).stdout
    blocks = [" ".join(b.split()) for b in ("\n" + text).split("\nsrc ") if b.strip()]
    return [b for b in blocks if f" dst {peer}/32 " in f" {b} "]


def _send(node: Pluto, peer: str, seconds: float) -> subprocess.Popen[str]:
    """A sender in the node's namespace: one UDP datagram to ``peer`` every 2 ms; it prints
    how many the kernel took and how many it refused (a drop policy: EPERM)."""
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "sent = refused = 0\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        f"        s.sendto(b'x', ('{peer}', 9)); sent += 1\n"
        "    except OSError:\n"
        "        refused += 1\n"
        "    time.sleep(0.002)\n"
        "print(sent, refused)\n"
    )
    return subprocess.Popen(node.host.argv([sys.executable, "-c", code]),
                            stdout=subprocess.PIPE, text=True)


def _counts(sender: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = sender.communicate(timeout=60)
    sent, refused = map(int, out.split())
    return sent, refused


def test_an_enforce_peer_without_its_conn_is_dropped_not_downgraded(lab: Lab) -> None:
    with plutos("server", "client") as (server, client):
        _responder(server, "server.oe.test", client)
        assert _policy_cli(server, _node_config(lab, server, {"host.names": ["server.oe.test"]})
                           ).returncode == 0
        remember_peer(client.dir / "state", "server.oe.test", server.host.address)
        config = _node_config(lab, client, {})
        done = _policy_cli(client, config)
        assert done.returncode == 0, done.stdout + done.stderr
        peer = server.host.address
        assert (client.ipsec_dir / "policies" / "oeagent-enforced").read_text(
        ).splitlines()[1:] == [f"{peer}/32"]
        # Two policies towards the peer: its conn's trap from this host's address, and the
        # enforced group's drop from any source, which loses to it (higher priority value).
        trap, drop = (next(p for p in _policies_to(client, peer) if p.startswith(prefix))
                      for prefix in (f"{client.host.address}/32 ", "0.0.0.0/0 "))
        assert "action block" in drop and "proto esp" in trap
        priority = {name: int(re.search(r"priority (\d+)", p).group(1))  # type: ignore[union-attr]
                    for name, p in (("trap", trap), ("drop", drop))}
        assert priority["trap"] < priority["drop"]

        # The per-peer conn gone, as between a replacement's delete and its route: the
        # kernel drops what is sent to the peer, and nothing negotiates NULL with it.
        client.whack("--delete", "--name", PEER_CONN)
        sent, refused = _counts(_send(client, peer, 0.5))
        assert sent == 0 and refused > 100
        time.sleep(0.5)
        assert client.ike_sa_counts()["total"] == 0, client.whack("--status")[-2000:]
        assert "authby=null" not in client.log_text()

        # oeagent policy puts the conn back (pluto no longer holds it), and traffic through
        # the kernel's trap gets the authenticated SA.
        done = _policy_cli(client, config)
        assert done.returncode == 0, done.stdout + done.stderr
        _counts(_send(client, peer, 0.3))
        _wait_for(client, r"established IKE SA; authenticated peer .* using peer certificate "
                          r"'@server.oe.test'")
        counts = client.ike_sa_counts()
        assert counts["authenticated"] == 1 and counts["anonymous"] == 0


def test_a_renewal_replacing_the_conns_never_lets_traffic_fall_to_null(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """An enrolled client authenticates mutually, so every per-peer conn uses its
    certificate and a renewal replaces them all (pluto 4.10 crashes on --rereadcerts with
    OE instances up). Datagrams sent right after addconn replaced the conn, before its route, with
    pluto given time to act on them (a replacement of thousands of conns takes a minute),
    are dropped; and nothing negotiates NULL with the peer. (Traffic sent before would not
    show it here: this kernel has no ESP, so the first attempt fails and leaves
    failureshunt=drop in place.)"""
    with plutos("server", "client") as (server, client):
        _responder(server, "server.oe.test", client)
        _responder(client, "client.oe.test", server)
        for node, name in ((server, "server.oe.test"), (client, "client.oe.test")):
            if node is client:
                remember_peer(client.dir / "state", "server.oe.test", server.host.address)
            done = _policy_cli(node, _node_config(lab, node, {"host.names": [name]}))
            assert done.returncode == 0, done.stdout + done.stderr
        assert "leftcert=oeagent" in (client.ipsec_dir / "oeagent.conf").read_text().split(
            f"conn {PEER_CONN}", 1)[1]
        peer = server.host.address
        outcomes: list[str] = []
        real_run = proc.run
        addconn = libreswan.command("addconn")

        def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
            done = real_run(argv, **kwargs)
            # addconn replaced the conn (deleted and added it): its trap is gone until the
            # route that follows.
            if argv[:len(addconn)] == addconn and PEER_CONN in argv:
                # This thread is in the client's namespace: its datagrams take the
                # client's kernel policies.
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    for _ in range(5):
                        try:
                            sock.sendto(b"x", (peer, 9))
                            outcomes.append("sent")
                        except PermissionError:
                            outcomes.append("dropped")
                        time.sleep(0.1)
            return done

        monkeypatch.setattr(proc, "run", run)
        with in_namespace(client.host.namespace):  # addconn reads %defaultroute there
            said = pluto_module.reread_certs(client.ctlsocket, nickname="oeagent",
                                             ipsec_dir=client.ipsec_dir)
        monkeypatch.undo()
        assert said is not None and "replaced" in said and PEER_CONN in said, said
        assert outcomes == ["dropped"] * 5
        time.sleep(0.5)
        assert client.ike_sa_counts()["total"] == 0, client.log_text()[-3000:]
        assert "authby=null" not in client.log_text()
        # The replaced conn works: traffic now gets the authenticated SA.
        _counts(_send(client, peer, 0.3))
        _wait_for(client, r"established IKE SA; authenticated peer .* using peer certificate "
                          r"'@server.oe.test'")
        assert client.ike_sa_counts()["anonymous"] == 0


def test_one_more_enforce_peer_adds_one_instance_and_removes_none(lab: Lab) -> None:
    """pluto 4.10 rereads a group incrementally only from a file written highest first
    (oeagent/policy/render.py): in ascending order, one more address sorting last made it
    delete and re-add every instance of the group."""
    with plutos("many") as (node,):
        node.start()
        for i in range(20):
            remember_peer(node.dir / "state", f"p{i}.oe.test", f"198.51.100.{100 + i}")
        config = _node_config(lab, node, {})
        assert _policy_cli(node, config).returncode == 0
        for address in ("198.51.100.150", "198.51.100.110"):  # the highest, then one inside
            logged = len(node.log_text())
            remember_peer(node.dir / "state", f"at{address.rsplit('.', 1)[1]}.oe.test", address)
            done = _policy_cli(node, config)
            assert done.returncode == 0, done.stdout + done.stderr
            said = node.log_text()[logged:]
            assert "deleting connection instance" not in said, said[-2000:]
            assert f'"oeagent-enforced#{address}/32"' in node.whack("--status")
        assert node.whack("--status").count('"oeagent-enforced#') >= 22


def test_cleartext_from_an_enforce_peer_is_dropped_on_arrival(lab: Lab) -> None:
    """The enforced group is a drop shunt both ways: cleartext from a peer that promised
    authenticated OE is not accepted either (while an SA is up, pluto's own inbound policy
    requires ESP from it anyway). A host that is not such a peer still gets through."""
    with plutos("server", "client", "other") as (server, client, other):
        client.start()
        remember_peer(client.dir / "state", "server.oe.test", server.host.address)
        done = _policy_cli(client, _node_config(lab, client, {}))
        assert done.returncode == 0, done.stdout + done.stderr
        receiver = subprocess.Popen(client.host.argv([sys.executable, "-c", (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 9999)); s.settimeout(1.5)\n"
            "got = set()\n"
            "try:\n"
            "    while True: got.add(s.recvfrom(100)[1][0])\n"
            "except OSError: pass\n"
            "print(' '.join(sorted(got)))\n")]), stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        for sender in (server, other):  # neither runs pluto: plain cleartext
            sender.host.run([sys.executable, "-c", (
                "import socket, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for _ in range(5):\n"
                f"    s.sendto(b'x', ('{client.host.address}', 9999)); time.sleep(0.05)\n")])
        out, _ = receiver.communicate(timeout=30)
        assert out.split() == [other.host.address]
