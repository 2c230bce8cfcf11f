"""Traffic to a ``testing`` peer that does not speak IKE, with the policy oeagent renders.

``testing`` is meant to be tried but never to lose traffic, so its conn says
``negotiationshunt=passthrough`` and ``failureshunt=passthrough``. Measured here with pluto
4.10 in lab namespaces (198.51.100.0/24): for a per-peer conn (``right=<address>``, not an
opportunistic group) pluto does not apply either shunt. The packet that hits the trap leaves
a narrow kernel ``%hold`` ("acquire" in ``whack --shuntstatus``), pluto logs
``assign_holdpass() no bare shunt to remove? - mismatch?``, and after IKE gives up the trap
stays: no datagram passed in 40 s. The test asserts what must hold (the echo answers in
clear without oeagent, the conns carry the passthrough shunts) and marks the traffic part
xfail with this reason while pluto behaves so; it passes once traffic gets through.
"""

from __future__ import annotations

import sys

import pytest

from lab import Lab
from lab.netns import Host
from oeagent.policy import render
from tests.integration.test_policy import _node_config, _policy_cli, plutos

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


def test_a_testing_peer_without_ike_still_gets_traffic(lab: Lab) -> None:
    with plutos("client", "mute") as (client, mute):
        mute.host.spawn([sys.executable, "-c", ECHO], str(mute.dir / "echo.log"))
        # Without oeagent the echo answers in clear (the measurement itself works).
        assert _echoes(client.host, mute.host.address, 1.5) > 0
        client.start()
        cfg = _node_config(lab, client, {
            "policy.peers": [f"mute.oe.test {mute.host.address} ecdsa testing"]})
        done = _policy_cli(client, cfg)
        assert done.returncode == 0, done.stdout + done.stderr
        conn = render.conn_blocks((client.ipsec_dir / render.CONF).read_text())[
            "oeagent-peer-mute_oe_test-1"].splitlines()
        assert "negotiationshunt=passthrough" in conn and "failureshunt=passthrough" in conn
        # pluto took both settings for the conn ...
        policy = [ln for ln in client.whack("--status").splitlines()
                  if '"oeagent-peer-mute_oe_test-1":   policy:' in ln]
        assert policy and "NEGO_PASS+failurePASS" in policy[0], policy
        # IKE is tried (nothing answers on 500) for retransmit-timeout=5s; allow for both
        # the negotiation and the failure shunt.
        # ... but does it let the traffic through?
        echoed = _echoes(client.host, mute.host.address, 8)
        shunts = client.whack("--shuntstatus")
        if echoed == 0:
            log = client.log_text()
            assert "initiating IKEv2 connection" in log, log[-2000:]
            pytest.xfail("pluto 4.10 applies neither negotiationshunt nor failureshunt to a "
                         "per-peer conn: the kernel's narrow %hold stays (" +
                         " ".join(shunts.split()) + ")")
        assert echoed > 0
