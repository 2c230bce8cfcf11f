"""The namespace lab itself: two real plutos negotiate NULL-auth OE over a bridge."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import Network
from lab.pluto import Pluto


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oen-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_two_plutos_establish_null_oe(short_dir: Path) -> None:
    with Network() as net:
        hosts = {name: net.add_host(name, number) for name, number in (("a", 10), ("b", 20))}
        plutos = {}
        for name, host in hosts.items():
            pluto = Pluto(host, short_dir / name)
            pluto.prepare()
            pluto.use_null_oe("198.51.100.0/24")
            pluto.start()
            pluto.load()
            plutos[name] = pluto
        out = plutos["a"].initiate_oe("198.51.100.10", "198.51.100.20")
        assert "established IKE SA" in out, out + plutos["a"].log_text()[-3000:]
        assert "authby=null" in out
        deadline = time.monotonic() + 5
        while plutos["b"].ike_sa_counts().get("anonymous") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert plutos["a"].ike_sa_counts()["anonymous"] == 1
        assert plutos["b"].ike_sa_counts()["anonymous"] == 1
        namespaces = [h.namespace for h in hosts.values()]
    import subprocess

    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in left for ns in namespaces)
    assert net.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


def test_host_in_a_namespace_enrolls_from_a_lab_in_its_own_namespace(short_dir: Path) -> None:
    """The end-to-end shape: the lab in a namespace of its own, oeagent inside a host."""
    import json
    import os
    import sys

    import dns.rdatatype

    from lab import Lab

    repo = Path(__file__).resolve().parents[2]
    with Network() as net:
        labhost = net.add_host("lab", 2)
        server = net.add_host("server", 10)
        lab = Lab(short_dir / "lab", address=labhost.address, namespace=labhost.namespace)
        lab.up()
        try:
            update = lab.update_message()
            update.replace("server.oe.test.", 60, dns.rdatatype.A, server.address)
            assert lab.send_update(update).rcode() == 0
            deadline = time.monotonic() + 5  # inline signing serves the change a few ms later
            while lab.dig("server.oe.test", "A").answer[0][0].address != server.address:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            config = lab.write_config(
                short_dir / "server" / "oeagent.toml",
                {"challenge.http.listen_address": server.address},
                root=short_dir / "server",
            )
            result = server.run(
                ["env", f"PYTHONPATH={repo}", f"PATH={os.environ['PATH']}",
                 sys.executable, "-m", "oeagent", "--config", str(config), "enroll", "--json"],
                check=False, timeout=120,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            document = json.loads(result.stdout)
            assert document["issued"] is True
            challenge = next(s for s in document["steps"] if s["step"] == "challenge")
            assert server.address in challenge["message"]
        finally:
            lab.down()
