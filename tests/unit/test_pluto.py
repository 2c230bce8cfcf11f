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
    assert pluto.reread_certs(tmp_path / "pluto.ctl") is None


def test_stale_socket_means_not_running(tmp_path: Path) -> None:
    # A socket file left by a pluto that died: connect() is refused.
    path = tmp_path / "pluto.ctl"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    assert pluto.reread_certs(path) is None


def test_not_a_socket_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pluto.ctl"
    path.write_text("")
    with pytest.raises(PlutoError, match="not a socket"):
        pluto.reread_certs(path)


STATUS_4_10 = """\
000 "oeagent-clear":   oriented; my_ip=unset; their_ip=unset;
000 "oeagent-clear#10.255.255.53/32": 198.51.100.10---198.51.100.1...%group; unrouted;
000 "oeagent-responder": 198.51.100.10[@server.oe.test]...%any[ID_NULL]; unrouted;
000 "oeagent-responder":     oriented; my_ip=unset; their_ip=unset; mycert=oeagent; my_updown=ipsec _updown;
000 "oeagent-responder"[1] 198.51.100.20:     oriented; my_ip=unset; their_ip=unset; mycert=oeagent; my_updown=ipsec _updown;
000 "mine":     oriented; my_ip=unset; their_ip=unset; mycert=other; my_updown=ipsec _updown;
"""


def test_conns_using_a_certificate_and_group_instances_from_whack_status() -> None:
    """What decides between `--rereadcerts` and replacing the conns: pluto 4.10 crashes on
    `--rereadcerts` with both (libreswan #1005; the end-to-end suite found it)."""
    assert pluto.cert_conns(STATUS_4_10, "oeagent") == ["oeagent-responder"]
    assert pluto.cert_conns(STATUS_4_10, "other") == ["mine"]
    assert pluto.has_group_instances(STATUS_4_10)
    assert not pluto.has_group_instances(STATUS_4_10.replace("#10.255.255.53/32", ""))


def test_sas_of_conns_using_the_certificate_from_whack_status() -> None:
    """pluto 4.10 also crashes on `--rereadcerts` while an SA of a certificate conn is up
    (the renewal-disruption benchmark found it), groups or not."""
    status = STATUS_4_10 + (
        '000 #1: "bench"[1] 198.51.100.11:500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA);'
        " REKEY in 3580s; newest ISAKMP; idle;\n"
    )
    assert pluto.has_states(status, ["bench"])
    assert not pluto.has_states(status, ["oeagent-responder", "ben"])
    assert not pluto.has_states(STATUS_4_10, ["mine"])


def test_operator_config_lists_conns_as_addconn_reads_them(tmp_path: Path) -> None:
    """pluto.config is read by ``ipsec addconn`` itself (include, also=, %default), so the
    conns oeagent re-adds, routes and starts are the ones pluto would at start."""
    (tmp_path / "ipsec.d").mkdir()
    (tmp_path / "ipsec.d" / "more.conf").write_text(
        "conn %default\n    auto=ondemand\n"
        "conn base\n    left=127.0.0.1\n    auto=ignore\n"
        "conn road\n    also=base\n    right=%any\n    auto=add\n"
        "conn peer\n    left=127.0.0.1\n    right=127.0.0.2\n"
        "conn tunnel\n    left=127.0.0.1\n    right=127.0.0.3\n    auto=start\n")
    main = tmp_path / "ipsec.conf"
    main.write_text(f"config setup\ninclude {tmp_path}/ipsec.d/*.conf\n")
    listed = pluto._listed(main, 30)
    assert listed.all == {"base", "road", "peer", "tunnel"}
    assert "peer" in listed.route and not listed.route & {"road", "base"}
    assert listed.start == {"tunnel"}
    with pytest.raises(PlutoError, match=r"cannot read pluto.config .*nope.conf"):
        pluto._listed(tmp_path / "nope.conf", 30)


@pytest.mark.parametrize("removed", [False, True])
def test_report_says_what_replacing_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed: bool) -> None:
    """Deleted conns (the certificate is gone) are not added again: the report must not
    promise that peers negotiate again."""
    path = tmp_path / "pluto.ctl"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        monkeypatch.setattr(pluto, "_whack", lambda *_: STATUS_4_10)
        monkeypatch.setattr(pluto, "_replace", lambda *_: None)
        said = pluto.reread_certs(path, nickname="oeagent", removed=removed)
    assert said is not None and "(oeagent-responder; their SAs ended" in said
    assert said.startswith("deleted" if removed else "replaced")
    assert ("negotiate again" in said) is not removed
