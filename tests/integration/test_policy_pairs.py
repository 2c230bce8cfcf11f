"""Who authenticates whom when oeagent's conns meet pluto 4.10's, pair by pair.

Five hosts in network namespaces, each with its own pluto and the policy `oeagent policy`
writes (the plain host runs libreswan's stock NULL OE instead):

| host   | enrolled | discovered          |
|--------|----------|---------------------|
| server | yes      | peer2               |
| peer2  | yes      | server              |
| solo   | yes      | server (not vice versa) |
| client | no       | server              |
| plain  | no oeagent: private-or-clear with NULL authentication only |

This kernel has no ESP, so every outcome is proven at the IKE SA level from pluto's logs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab.netns import Host, Network
from lab.pluto import Pluto
from oeagent.policy.render import NULL_CLIENT_ID
from tests.integration.oe_peers import ScratchCA
from tests.integration.test_policy import (
    _enrolled,
    _import_identity,
    _node_config,
    _policy_cli,
    _trust_root,
    remember_peer,
)

pytestmark = pytest.mark.lab

CERT = r"authenticated peer '[^']*' digital signature using peer certificate '@{}' issued by"
NULL = r"authenticated peer using authby=null and {}"
# The host order gives the addresses: 198.51.100.10, .11, ...
HOSTS = ("server", "peer2", "solo", "client", "plain")
ENROLLED = {"server": "server.oe.test", "peer2": "peer2.oe.test", "solo": "solo.oe.test"}
DISCOVERED = {"server": ["peer2"], "peer2": ["server"], "solo": ["server"], "client": ["server"]}


@contextlib.contextmanager
def hosts(lab: Lab) -> Iterator[dict[str, Pluto]]:
    base = Path(tempfile.mkdtemp(prefix="oe5p-", dir="/tmp"))
    try:
        with Network(prefix="o5p") as net:
            nodes = {n: Pluto(net.add_host(n, 10 + i), base / n) for i, n in enumerate(HOSTS)}
            ca = ScratchCA.create(base / "ca")
            for name, node in nodes.items():
                node.prepare()
                _trust_root(node, ca.root_pem)
                if name == "plain":
                    node.use_null_oe("198.51.100.0/24")
                node.start()
            for name, fqdn in ENROLLED.items():
                _, key_path, cert = ca.issue(fqdn)
                _import_identity(nodes[name], key_path, cert)
                _enrolled(nodes[name])
            for name, peers in DISCOVERED.items():
                for peer in peers:
                    remember_peer(nodes[name].dir / "state", ENROLLED[peer],
                                  nodes[peer].host.address)
            for name, node in nodes.items():
                if name == "plain":
                    node.load()
                    continue
                overrides = {"host.names": [ENROLLED[name]]} if name in ENROLLED else {}
                done = _policy_cli(node, _node_config(lab, node, overrides))
                assert done.returncode == 0, done.stdout + done.stderr
            yield nodes
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _forget_states(nodes: dict[str, Pluto]) -> None:
    """Delete every state, so each pair starts a fresh IKE SA (highest numbers first)."""
    for node in nodes.values():
        numbers = {int(n) for n in re.findall(r"#(\d+):", node.whack("--showstates",
                                                                       check=False))}
        for number in sorted(numbers, reverse=True):
            node.whack("--deletestate", str(number), check=False)


def meet(nodes: dict[str, Pluto], initiator: str, responder: str,
         expect: dict[str, str], timeout: float = 8) -> dict[str, str]:
    """``initiator`` starts OE towards ``responder``; wait until each host's new log lines
    match its pattern in ``expect``; return those new lines."""
    _forget_states(nodes)
    start = {n: len(nodes[n].log_text()) for n in expect}
    a, b = nodes[initiator], nodes[responder]
    a.initiate_oe(a.host.address, b.host.address)
    deadline = time.monotonic() + timeout
    while True:
        new = {n: nodes[n].log_text()[start[n]:] for n in expect}
        if all(re.search(p, new[n]) for n, p in expect.items()):
            return new
        if time.monotonic() > deadline:
            raise AssertionError(f"{initiator} -> {responder}: expected {expect}, got:\n"
                                 + "\n".join(f"[{n}] {t[-2500:]}" for n, t in new.items()))
        time.sleep(0.1)


def test_every_pair_gets_the_strongest_authentication_both_can_do(lab: Lab) -> None:
    with hosts(lab) as n:
        # oeagent client -> enrolled server: the server proves @server.oe.test; the client
        # uses NULL authentication under oeagent's fixed client ID.
        meet(n, "client", "server", {
            "client": "initiator established IKE SA; " + CERT.format("server.oe.test"),
            "server": "responder established IKE SA; "
                      + NULL.format(f"ID_FQDN '{NULL_CLIENT_ID}'")})
        # plain NULL-only host -> enrolled server: encrypted NULL OE, never clear.
        out = meet(n, "plain", "server", {
            "plain": "initiator established IKE SA; " + NULL.format("ID_NULL"),
            "server": "Peer ID 'ID_NULL' expects us to have ID_NULL and connection allows "
                      "AUTH_NULL - allowing(.|\n)*responder established IKE SA"})
        assert "X509: authentication failed" not in out["plain"]
        # enrolled server -> plain host: NULL, both ways.
        meet(n, "server", "plain", {
            "server": "initiator established IKE SA; " + NULL.format("ID_NULL"),
            "plain": "responder established IKE SA; " + NULL.format("ID_NULL")})
        # enrolled <-> enrolled, both discovered each other: mutual, in both directions.
        for a, b in (("server", "peer2"), ("peer2", "server")):
            meet(n, a, b, {
                a: "initiator established IKE SA; " + CERT.format(ENROLLED[b]),
                b: "responder established IKE SA; " + CERT.format(ENROLLED[a])})
        # enrolled solo discovered the server, the server does not know solo: solo
        # authenticates the server by name; the server's responder checks solo's signature
        # and chain to its trust anchors, not the name (require-id-on-certificate=no: the
        # responder's rightid is oeagent's NULL client ID), and says so.
        meet(n, "solo", "server", {
            "solo": "initiator established IKE SA; " + CERT.format("server.oe.test"),
            "server": "X509: connection allows unmatched IKE ID and certificate SAN(.|\n)*"
                      "responder established IKE SA; " + CERT.format(re.escape(NULL_CLIENT_ID[1:]))
                      + " CA 'CN=oe5 test root'"})
        # NULL between the client and the plain host, either way.
        for a, b in (("client", "plain"), ("plain", "client")):
            meet(n, a, b, {a: "initiator established IKE SA; " + NULL.format("ID_NULL"),
                           b: "responder established IKE SA; " + NULL.format("ID_NULL")})
        # The one pair pluto 4.10 cannot serve: the enrolled server starts NULL OE towards a
        # client that holds it to its certificate. The client's per-peer conn (an exact
        # address match) is chosen at IKE_SA_INIT, pluto never switches conns for AUTH_NULL,
        # and the conn wants @server.oe.test: the client refuses -- correctly, accepting NULL
        # there would let anyone at the server's address in unauthenticated.
        meet(n, "server", "client", {
            "client": "Peer ID 'ID_NULL' mismatched on first found connection",
            "server": "IKE SA authentication request rejected by peer: AUTHENTICATION_FAILED"})
        # The client's own traffic to the server still starts an authenticated SA.
        meet(n, "client", "server", {
            "client": "initiator established IKE SA; " + CERT.format("server.oe.test")})


def _behind_nat(net: Network, name: str) -> Host:
    """A host on 100.64.0.2/24 behind a masquerading router (198.51.100.60 on the bridge);
    both namespaces are ``net``'s, so closing it removes them."""
    router = net.add_host(f"{name}gw", 60)
    inside = Host(name, f"{net.tag}-{name}", "100.64.0.2")
    subprocess.run(["ip", "netns", "add", inside.namespace], check=True)
    net.hosts[name] = inside
    outer, inner = f"{net.tag}n0", f"{net.tag}n1"
    for argv in (["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
                 ["ip", "link", "set", outer, "netns", router.namespace],
                 ["ip", "link", "set", inner, "netns", inside.namespace]):
        subprocess.run(argv, check=True)
    router.run(["ip", "addr", "add", "100.64.0.1/24", "dev", outer])
    router.run(["ip", "link", "set", outer, "up"])
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    router.run(["nft", "add table ip nat; add chain ip nat post { type nat hook postrouting "
                "priority 100; }; add rule ip nat post oifname eth0 masquerade"])
    inside.run(["ip", "link", "set", inner, "name", "eth0"])
    inside.run(["ip", "addr", "add", "100.64.0.2/24", "dev", "eth0"])
    for link in ("eth0", "lo"):
        inside.run(["ip", "link", "set", link, "up"])
    inside.run(["ip", "route", "add", "default", "via", "100.64.0.1"])
    return inside


def test_a_client_behind_nat_authenticates_the_server_and_a_plain_one_gets_null(
        lab: Lab) -> None:
    """Behind NAT the server sees the router's address, not the client's: oeagent's fixed
    NULL client ID (not the address) is what lets the responder answer with its
    certificate; a NULL-only host behind the same NAT still gets NULL."""
    base = Path(tempfile.mkdtemp(prefix="oe5n-", dir="/tmp"))
    try:
        with Network(prefix="o5n") as net:
            server = Pluto(net.add_host("server", 10), base / "server")
            client = Pluto(_behind_nat(net, "natc"), base / "natc")
            ca = ScratchCA.create(base / "ca")
            for node in (server, client):
                node.prepare()
                _trust_root(node, ca.root_pem)
                node.start()
            _, key_path, cert = ca.issue("server.oe.test")
            _import_identity(server, key_path, cert)
            _enrolled(server)
            remember_peer(client.dir / "state", "server.oe.test", server.host.address)
            for node, overrides in ((server, {"host.names": ["server.oe.test"]}), (client, {})):
                done = _policy_cli(node, _node_config(lab, node, overrides))
                assert done.returncode == 0, done.stdout + done.stderr
            nodes = {"server": server, "natc": client}
            meet(nodes, "natc", "server", {
                "natc": "initiator established IKE SA; " + CERT.format("server.oe.test"),
                "server": r"\] 198\.51\.100\.60 #\d+: responder established IKE SA; "
                          + NULL.format(f"ID_FQDN '{NULL_CLIENT_ID}'")})
            # The same host as a plain NULL-only one.
            client.use_null_oe("198.51.100.0/24")
            (client.ipsec_dir / "oeagent.conf").unlink()
            client.whack("--shutdown", check=False)
            time.sleep(0.5)
            client.start()
            client.load()
            meet(nodes, "natc", "server", {
                "natc": "initiator established IKE SA; " + NULL.format("ID_NULL"),
                "server": "expects us to have ID_NULL and connection allows AUTH_NULL"})
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_rsa_enrolled_host_answers_the_same_way(lab: Lab) -> None:
    """authby=rsasig,null: an RSA certificate to the oeagent client, NULL to a plain host."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    base = Path(tempfile.mkdtemp(prefix="oe5r-", dir="/tmp"))
    try:
        with Network(prefix="o5r") as net:
            n = {name: Pluto(net.add_host(name, 10 + i), base / name)
                 for i, name in enumerate(("rsa", "client", "plain"))}
            ca = ScratchCA.create(base / "ca")
            for name, node in n.items():
                node.prepare()
                _trust_root(node, ca.root_pem)
                if name == "plain":
                    node.use_null_oe("198.51.100.0/24")
                node.start()
            _, key_path, cert = ca.issue(
                "rsa.oe.test", key=rsa.generate_private_key(65537, 2048))  # type: ignore[arg-type]
            _import_identity(n["rsa"], key_path, cert)
            _enrolled(n["rsa"])
            for name, overrides in (
                    ("rsa", {"host.names": ["rsa.oe.test"], "key.algorithm": "rsa-2048"}),
                    ("client", {"policy.peers": [f"rsa.oe.test {n['rsa'].host.address} "
                                                 "rsasig enforce"]})):
                done = _policy_cli(n[name], _node_config(lab, n[name], overrides))
                assert done.returncode == 0, done.stdout + done.stderr
            n["plain"].load()
            assert "authby=rsasig,null" in (n["rsa"].ipsec_dir / "oeagent.conf").read_text()
            meet(n, "client", "rsa", {
                "client": "initiator established IKE SA; authenticated peer '[^']*RSA[^']*' "
                          "digital signature using peer certificate '@rsa.oe.test'",
                "rsa": "responder established IKE SA; "
                       + NULL.format(f"ID_FQDN '{NULL_CLIENT_ID}'")})
            meet(n, "plain", "rsa", {
                "plain": "initiator established IKE SA; " + NULL.format("ID_NULL"),
                "rsa": "expects us to have ID_NULL and connection allows AUTH_NULL"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
