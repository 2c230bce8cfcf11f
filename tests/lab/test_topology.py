"""The end-to-end topology comes up, and its plain hosts speak NULL-auth OE to each other."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.topology import HOSTS, Topology


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    directory = Path(tempfile.mkdtemp(prefix="oe6-", dir="/tmp"))
    try:
        with Topology(directory) as topo:
            yield topo
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_every_host_resolves_through_the_lab(topology: Topology) -> None:
    for name, (number, fqdn) in HOSTS.items():
        answer = topology.lab.dig(fqdn, "A") if topology.lab else None
        assert answer is not None
        assert [r.address for rrset in answer.answer for r in rrset if hasattr(r, "address")] == [
            f"198.51.100.{number}"
        ], name


def test_null_oe_between_two_plain_hosts(topology: Topology) -> None:
    client, plain = topology.hosts["client"], topology.hosts["plain"]
    for host in (client, plain):
        host.pluto.use_null_oe("198.51.100.0/24")
        host.pluto.start()
        host.pluto.load()
    out = client.pluto.initiate_oe(client.address, plain.address)
    assert "established IKE SA" in out and "authby=null" in out, out
    assert client.pluto.ike_sa_counts()["anonymous"] == 1
