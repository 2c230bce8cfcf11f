"""An operator's own conns with oeagent's certificate survive a renewal on an OE host.

pluto 4.10 segfaults on ``whack --rereadcerts`` while it holds OE group instances (libreswan
#1005), so oeagent replaces the conns that use the nickname instead. Its own come from
oeagent.conf; the operator's come from ``pluto.config``, the ipsec.conf that includes them.
A real pluto in a lab namespace (lab.netns, lab.pluto), with NULL OE groups loaded, holds
three operator conns (auto=add, ondemand and start) in ``ipsec.d/operator.conf``;
``oeagent renew --force`` must leave pluto running with all three loaded again, the
on-demand one routed, the auto=start one initiated again, and the new certificate. Where
pluto.config does not define them, the renewal says so and deletes nothing. Run under
``flock /tmp/netns.lock``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import Host, Network
from lab.pluto import PLUTO, Pluto
from oeagent import config as config_module
from oeagent import pluto as oeagent_pluto

from .conftest import ShortConfig, oeagent

pytestmark = pytest.mark.lab

OPERATOR_CONF = """\
conn op-road
    left=198.51.100.10
    leftcert=oeagent
    leftid=@server.oe.test
    leftauth=ecdsa
    right=%any
    rightid=%null
    rightauth=null
    auto=add

conn op-peer
    left=198.51.100.10
    leftcert=oeagent
    leftid=@server.oe.test
    leftauth=ecdsa
    right=198.51.100.20
    rightid=@peer.oe.test
    rightauth=ecdsa
    auto=ondemand

conn op-start
    left=198.51.100.10
    leftcert=oeagent
    leftid=@server.oe.test
    leftauth=ecdsa
    right=198.51.100.30
    rightid=@nobody.oe.test
    rightauth=ecdsa
    auto=start
"""


@pytest.fixture
def server(short_dir: Path) -> Iterator[tuple[Host, Pluto]]:
    if os.geteuid() != 0 or not Path(PLUTO).exists() or shutil.which("ip") is None:
        pytest.skip("needs root, libreswan's pluto and iproute2")
    with Network("op") as net:
        host = net.add_host("server", 10)
        node = Pluto(host, short_dir / "p")
        node.prepare()
        yield host, node


def listed_serial(node: Pluto) -> str:
    found = re.search(r'End certificate "oeagent" - SN: 0x([0-9a-f]+)', node.whack("--listcerts"))
    assert found, node.whack("--listcerts")
    return format(int(found.group(1), 16), "x")


def conn_serials(status: str) -> dict[str, str]:
    """pluto numbers every conn it adds: ``"op-road": ... conn serial: $12;``."""
    return dict(re.findall(r'^000 "(op-[a-z]+)":.*conn serial: \$(\d+)', status, re.MULTILINE))


def states(status: str, conn: str) -> set[str]:
    """The SA numbers pluto shows for ``conn`` (``#3: "op-start"...``)."""
    return set(re.findall(rf'^000 #(\d+): "{conn}"', status, re.MULTILINE))


def current_serial(config: Path) -> str:
    state = config_module.load(config).state_dir
    return (state / "current.json").read_text().split('"serial": "')[1].split('"')[0]


def test_renewal_re_adds_the_operators_conns_from_pluto_config(
        short_config: ShortConfig, server: tuple[Host, Pluto], short_dir: Path) -> None:
    host, node = server
    settings = {"pluto.ctlsocket": str(node.ctlsocket), "pluto.ipsec_dir": str(node.ipsec_dir),
                "pluto.config": str(node.config), "nss.database": node.nss_database}
    config = short_config(settings)
    done = oeagent(config, "enroll")
    assert done.returncode == 0, done.stderr
    (node.ipsec_dir / "operator.conf").write_text(OPERATOR_CONF)
    node.use_null_oe("198.51.100.0/24")
    node.start()
    node.load()
    status = node.whack("--status")
    # What makes oeagent replace instead of --rereadcerts: group instances, and conns with
    # the certificate that are not oeagent's (no oeagent.conf at all here).
    assert oeagent_pluto.has_group_instances(status), status
    assert sorted(oeagent_pluto.cert_conns(status, "oeagent")) == ["op-peer", "op-road", "op-start"]
    assert listed_serial(node) == current_serial(config)
    assert not (node.ipsec_dir / "oeagent.conf").exists()

    # pluto.config without the operator's conns: refused before anything is deleted.
    elsewhere = short_dir / "elsewhere.conf"
    elsewhere.write_text("config setup\n")
    wrong = short_config({**settings, "pluto.config": str(elsewhere)}, name="wrong.toml")
    done = oeagent(wrong, "renew", "--force")
    assert done.returncode != 0
    assert f"is in neither {node.ipsec_dir / 'oeagent.conf'} nor pluto.config ({elsewhere})" \
        in done.stderr, done.stderr
    status = node.whack("--status")  # pluto lives, the conns are still loaded
    assert sorted(oeagent_pluto.cert_conns(status, "oeagent")) == ["op-peer", "op-road", "op-start"]

    before, loaded = current_serial(config), conn_serials(status)
    started = states(status, "op-start")  # pluto initiates auto=start conns as they load
    assert started, status
    done = oeagent(config, "renew", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    # The report says what really happened: the conns were replaced (their SAs end), not reread.
    assert "replaced the conns using it" in done.stdout, done.stdout
    after = current_serial(config)
    assert after != before
    assert all(proc.poll() is None for proc in host.processes), node.log_text()[-2000:]
    status = node.whack("--status")
    assert sorted(oeagent_pluto.cert_conns(status, "oeagent")) == ["op-peer", "op-road", "op-start"]
    # Added again (new conn serials) from operator.conf, with the new certificate, and the
    # on-demand one routed again as pluto routes it at start.
    again = conn_serials(status)
    assert again.keys() == loaded.keys() and all(again[c] != loaded[c] for c in loaded)
    assert listed_serial(node) == after
    assert re.search(r'^000 "op-peer": .*; prospective erouted;', status, re.MULTILINE), status
    assert states(status, "op-start") and not states(status, "op-start") & started
    assert "Segmentation fault" not in node.log_text()
