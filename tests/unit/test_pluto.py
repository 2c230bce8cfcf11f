"""oeagent.pluto without a running pluto: not running is an answer, not an error."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from oeagent import pluto
from oeagent.errors import PlutoError

pytestmark = pytest.mark.skipif(shutil.which("ipsec") is None, reason="needs libreswan")


def test_no_socket_means_not_running(tmp_path: Path) -> None:
    assert pluto.reread_certs(tmp_path / "pluto.ctl") is False


def test_stale_socket_means_not_running(tmp_path: Path) -> None:
    # A socket file left by a pluto that died: connect() is refused.
    path = tmp_path / "pluto.ctl"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    assert pluto.reread_certs(path) is False


def test_not_a_socket_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pluto.ctl"
    path.write_text("")
    with pytest.raises(PlutoError, match="not a socket"):
        pluto.reread_certs(path)
