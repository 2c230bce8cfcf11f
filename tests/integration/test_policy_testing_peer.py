"""Traffic to a ``testing`` peer that does not speak IKE, with the policy oeagent renders.

``testing`` is meant to be tried but never to lose traffic, so its conn says
``negotiationshunt=passthrough`` and ``failureshunt=passthrough``. Measured with pluto 4.10
in lab namespaces (198.51.100.0/24): for a per-peer conn with ``right=<address>`` pluto
loads both (``NEGO_PASS+failurePASS``) but applies neither. The packet that hits the trap
leaves a narrow kernel ``%hold`` ("acquire" in ``whack --shuntstatus``), pluto logs
``assign_holdpass() no bare shunt to remove? - mismatch?``, and after IKE gives up the trap
stays: no datagram passed in 40 s. As an opportunistic group of its one address the same
conn passes traffic from the first retransmission on (``%pass oe-failing``), so oeagent
renders testing peers that way; enforce peers stay static conns (hold, then drop).
"""

from __future__ import annotations

import sys

import pytest

from lab import Lab
from lab.netns import Host
from oeagent.policy import render
from tests.integration.test_policy import (
    _node_config,
    _policy_cli,
    _responder,
    _wait_for,
    plutos,
    remember_peer,
)

pytestmark = pytest.mark.lab

ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7007))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
"""
# Send one datagram every 0.2 s for argv[2] seconds; print how many echoes came back.
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
got = 0
while time.monotonic() < end:
    try:
        s.sendto(b"x", (sys.argv[1], 7007))
    except OSError:
        pass
    try:
        while True:
            s.recv(100)
            got += 1
    except OSError:
        pass
print(got)
"""


def _echoes(host: Host, address: str, seconds: float) -> int:
    done = host.run([sys.executable, "-c", SEND, address, str(seconds)], timeout=seconds + 10)
    return int(done.stdout.strip())


def test_a_testing_peer_without_ike_gets_traffic_an_enforce_peer_does_not(lab: Lab) -> None:
    with plutos("client", "mute", "strict") as (client, mute, strict):
        for peer in (mute, strict):
            peer.host.spawn([sys.executable, "-c", ECHO], str(peer.dir / "echo.log"))
            # Without oeagent the echo answers in clear (the measurement itself works).
            assert _echoes(client.host, peer.host.address, 1.5) > 0
        client.start()
        cfg = _node_config(lab, client, {"policy.peers": [
            f"mute.oe.test {mute.host.address} ecdsa testing",
            f"strict.oe.test {strict.host.address} ecdsa enforce"]})
        done = _policy_cli(client, cfg)
        assert done.returncode == 0, done.stdout + done.stderr
        blocks = render.conn_blocks((client.ipsec_dir / render.CONF).read_text())
        conn = blocks["oeagent-peer-mute_oe_test-1"].splitlines()
        assert "negotiationshunt=passthrough" in conn and "failureshunt=passthrough" in conn
        status = client.whack("--status")
        assert '"oeagent-peer-mute_oe_test-1":   policy:' in status
        policy = [ln for ln in status.splitlines()
                  if '"oeagent-peer-mute_oe_test-1":   policy:' in ln]
        assert "NEGO_PASS+failurePASS" in policy[0], policy
        # Nothing answers IKE at either peer (no pluto there). The testing peer's traffic
        # passes while IKE is tried (retransmit-timeout=5s) ...
        echoed = _echoes(client.host, mute.host.address, 3)
        log = client.log_text()
        assert f'"oeagent-peer-mute_oe_test-1#{mute.host.address}/32"' in log, log[-2000:]
        shunts = client.whack("--shuntstatus")
        assert echoed >= 5, f"{echoed} echoes; {shunts}"
        # ... and the enforce peer's is held, then dropped: nothing in clear.
        assert _echoes(client.host, strict.host.address, 7) == 0


def test_a_testing_peer_that_speaks_ike_is_authenticated_by_name(lab: Lab) -> None:
    """The group form still binds the name: the testing peer's certificate is checked
    against @fqdn, as for an enforce peer."""
    with plutos("server", "client") as (server, client):
        _responder(server, "server.oe.test", client)
        assert _policy_cli(server, _node_config(lab, server, {"host.names": ["server.oe.test"]})
                           ).returncode == 0
        remember_peer(client.dir / "state", "server.oe.test", server.host.address, "testing")
        done = _policy_cli(client, _node_config(lab, client, {}))
        assert done.returncode == 0, done.stdout + done.stderr
        client.initiate_oe(client.host.address, server.host.address)
        _wait_for(client, r"established IKE SA; authenticated peer .* using peer certificate "
                          r"'@server.oe.test' issued by CA 'CN=oe5 test root'")
        assert "oeagent-peer-server_oe_test-1#" in client.log_text()
        assert client.ike_sa_counts()["authenticated"] == 1
