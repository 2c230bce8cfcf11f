"""`oeagent serve` opens its port at once: no reverse DNS lookup of the listening address.

Found by the end-to-end suite: in a network namespace whose system resolver is unreachable,
http.server's server_bind (socket.getfqdn) held the port closed for 10 s.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from oeagent.publish.serve import WellKnownServer
from oeagent.state import StateDir


def test_bind_does_not_ask_dns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(name: str = "") -> str:
        raise AssertionError(f"getfqdn({name!r}) called: a reverse lookup before listening")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    monkeypatch.setattr(WellKnownServer, "reload_certificate", lambda self: None)
    server = WellKnownServer(("127.0.0.1", 0), StateDir(tmp_path))
    try:
        assert server.server_port == server.socket.getsockname()[1] != 0
        assert server.server_name == "127.0.0.1"
    finally:
        server.server_close()
