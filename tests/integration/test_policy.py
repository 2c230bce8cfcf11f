"""oeagent policy: rendering, validation, dry run, install, and a real pluto in namespaces."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

from lab import Lab
from lab.netns import Network
from lab.pluto import Pluto
from oeagent import config as config_module
from oeagent.advertisement import Advertisement
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.lookup import Result
from oeagent.policy import PolicyError, apply, render
from oeagent.report import Reporter
from oeagent.state import StateDir
from tests.integration.oe_peers import ScratchCA

pytestmark = pytest.mark.lab
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
REPO = Path(__file__).resolve().parents[2]


def remember_peer(state_dir: Path, fqdn: str, address: str, mode: str = "enforce") -> None:
    """Put a discovered, authenticated peer into the cache, as `oeagent discover` does."""
    ad = Advertisement(fqdn, "ecdsa", ("ab" * 32,), mode, 3600)
    state = StateDir(state_dir)
    state.ensure()
    cache = PeerCache(state)
    cache.update(Result(fqdn, fqdn, "authenticated", "dns", ad, NOW + dt.timedelta(hours=1),
                        (address,)), NOW)
    cache.save()


def test_policy_renders_checks_and_installs(make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = config_module.load(make_lab_config({
        "policy": {"clear": ["198.51.100.0/24"], "block": ["203.0.113.0/24"],
                   "peers": ["static.oe.test 192.0.2.20 rsasig testing"]},
    }))
    remember_peer(cfg.state_dir, "db.oe.test", "192.0.2.10")
    out = io.StringIO()
    dry = apply(cfg, Reporter(stream=out), dry_run=True, now=NOW)
    assert dry["changed"] and "+conn oeagent-peer-db_oe_test-1" in dry["diff"]
    assert not cfg.pluto.ipsec_dir.exists() or not any(cfg.pluto.ipsec_dir.iterdir())
    result = apply(cfg, Reporter(stream=out), now=NOW)
    assert result["changed"] and sorted(result["peers"]) == [
        "db.oe.test=192.0.2.10:enforce", "static.oe.test=192.0.2.20:testing"]
    conf = (cfg.pluto.ipsec_dir / "oeagent.conf").read_text()
    db = conf.split("conn oeagent-peer-db_oe_test-1", 1)[1].split("\nconn ", 1)[0]
    assert "rightid=@db.oe.test" in db and "right=192.0.2.10" in db
    assert "rightauth=ecdsa" in db and "failureshunt=drop" in db and "%fromcert" not in conf
    static = conf.split("conn oeagent-peer-static_oe_test-1", 1)[1]
    assert "rightauth=rsasig" in static and "failureshunt=passthrough" in static
    groups = cfg.pluto.ipsec_dir / "policies"
    assert "198.51.100.0/24" in (groups / "oeagent-clear").read_text()
    assert "203.0.113.0/24" in (groups / "oeagent-block").read_text()
    assert (groups / "oeagent-private-or-clear").read_text().splitlines()[1:] == ["0.0.0.0/0"]
    assert "oeagent-responder" not in conf  # not enrolled
    # Same inputs again: nothing to do; the dry run shows no diff.
    assert apply(cfg, Reporter(stream=out), now=NOW)["changed"] is False
    assert apply(cfg, Reporter(stream=out), dry_run=True, now=NOW)["diff"] == ""


def test_broken_template_is_caught_before_installing(
    make_lab_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_module.load(make_lab_config())
    remember_peer(cfg.state_dir, "db.oe.test", "192.0.2.10")
    apply(cfg, Reporter(stream=io.StringIO()), now=NOW)
    before = {p: p.read_text() for p in cfg.pluto.ipsec_dir.rglob("*") if p.is_file()}
    original = render.template

    def broken(name: str) -> Template:
        text = original(name).template
        return Template(text.replace("failureshunt=$failureshunt", "failureshunt=sometimes"))

    monkeypatch.setattr(render, "template", broken)
    remember_peer(cfg.state_dir, "new.oe.test", "192.0.2.11")
    with pytest.raises(PolicyError, match=r"checkconfig rejected.*failureshunt, invalid value"):
        apply(cfg, Reporter(stream=io.StringIO()), now=NOW)
    after = {p: p.read_text() for p in cfg.pluto.ipsec_dir.rglob("*") if p.is_file()}
    assert after == before


def test_own_checks_catch_a_missing_nickname_and_a_cidr_in_two_groups(
    make_lab_config: Callable[..., Path], lab: Lab
) -> None:
    cfg = config_module.load(make_lab_config({"policy": {"block": ["192.0.2.0/24"],
                                                         "private_or_clear": ["192.0.2.0/24"]}}))
    with pytest.raises(PolicyError, match=r"192\.0\.2\.0/24 is in both oeagent-block and oeagent-private-or-clear"):
        apply(cfg, Reporter(stream=io.StringIO()), now=NOW)
    cfg = config_module.load(make_lab_config({"policy.responder": True}))
    state = StateDir(cfg.state_dir)
    state.ensure()
    state.write_json(state.deployed_path, {"database": cfg.nss.database, "nickname": "oeagent"})
    with pytest.raises(PolicyError, match="leftcert=oeagent is not in"):
        apply(cfg, Reporter(stream=io.StringIO()), now=NOW)


@contextlib.contextmanager
def plutos(*names: str) -> Iterator[list[Pluto]]:
    """One pluto per host in namespaces ``oe5-XXXX-<name>`` on 198.51.100.0/24, with its
    directories under a short /tmp path (Unix socket paths stay well under 108 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="oe5-", dir="/tmp"))
    try:
        with Network(prefix="oe5-") as net:
            nodes = [Pluto(net.add_host(name, 10 + i), base / name) for i, name in enumerate(names)]
            for node in nodes:
                node.prepare()
            yield nodes
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30)


def _trust_root(node: Pluto, root_pem: Path) -> None:
    _run("certutil", "-A", "-d", node.nss_database, "-n", "oe5-root", "-t", "CT,,", "-a",
         "-i", str(root_pem))


def _import_identity(node: Pluto, key_path: Path, cert: Any) -> None:
    from oeagent import keys

    p12 = node.dir / "id.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"oeagent", keys.load_key_pem(key_path.read_bytes()), cert, None, NoEncryption()))
    _run("pk12util", "-i", str(p12), "-d", node.nss_database, "-W", "")


def _enrolled(node: Pluto, database: str | None = None) -> None:
    state = StateDir(node.dir / "state")
    state.ensure()
    state.write_json(state.deployed_path,
                     {"database": database or node.nss_database, "nickname": "oeagent"})


def _responder(server: Pluto, name: str, *others: Pluto) -> None:
    """``server`` enrolled as ``name`` with a scratch CA's certificate, which it and
    ``others`` trust; every pluto started."""
    ca = ScratchCA.create(server.dir / "ca")
    _, key_path, cert = ca.issue(name)
    for node in (server, *others):
        _trust_root(node, ca.root_pem)
        node.start()
    _import_identity(server, key_path, cert)
    _enrolled(server)


def _policy_cli(node: Pluto, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`oeagent policy` run inside the node's namespace, as it runs next to a real pluto."""
    return subprocess.run(
        node.host.argv([sys.executable, "-m", "oeagent", "--config", str(config), "policy",
                        *args]),
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _node_config(lab: Lab, node: Pluto, overrides: dict[str, Any]) -> Path:
    path = node.dir / "oeagent.toml"
    settings: dict[str, Any] = {
        "pluto.ctlsocket": str(node.ctlsocket), "pluto.ipsec_dir": str(node.ipsec_dir),
        "nss.database": node.nss_database, "state_dir": str(node.dir / "state"),
        "policy.private_or_clear": ["198.51.100.0/24"],
        "discovery.resolver": "127.0.0.1",
    }
    settings.update(overrides)
    return lab.write_config(path, settings, root=node.dir)


def _wait_for(node: Pluto, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log_text()
        if re.search(pattern, log):
            return log
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in {node.host.name}'s pluto log:\n{node.log_text()[-3000:]}")


def test_generated_policy_loads_into_real_pluto(lab: Lab) -> None:
    """Three hosts in namespaces: an enrolled server, a client that discovered it, and a
    client that knows nothing. The policy oeagent writes is what pluto runs."""
    with plutos("server", "client", "plain") as (server, client, plain):
        _responder(server, "server.oe.test", client, plain)
        server_cfg = _node_config(lab, server, {"host.names": ["server.oe.test"]})
        client_cfg = _node_config(lab, client, {})
        remember_peer(client.dir / "state", "server.oe.test", server.host.address)
        plain_cfg = _node_config(lab, plain, {})

        for node, cfg_path in ((server, server_cfg), (client, client_cfg), (plain, plain_cfg)):
            done = _policy_cli(node, cfg_path, "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout.splitlines()[-1])["ok"] is True
        assert "conn oeagent-responder" in (server.ipsec_dir / "oeagent.conf").read_text()

        # The client that discovered the server authenticates it by name.
        client.initiate_oe(client.host.address, server.host.address)
        _wait_for(client, r"established IKE SA; authenticated peer .* using peer certificate "
                          r"'@server.oe.test' issued by CA 'CN=oe5 test root'")
        assert client.ike_sa_counts()["authenticated"] == 1
        # A later change (one more peer) reloads only what changed: the SA survives, and the
        # new peer's trap is in the kernel.
        remember_peer(client.dir / "state", "other.oe.test", "198.51.100.77")
        done = _policy_cli(client, client_cfg)
        assert done.returncode == 0, done.stdout + done.stderr
        assert client.ike_sa_counts()["authenticated"] == 1
        xfrm = client.host.run(["ip", "xfrm", "policy"]).stdout
        assert f"src {client.host.address}/32 dst 198.51.100.77/32" in xfrm
        # The client that knows nothing asks for NULL OE and gets it from the same responder
        # conn (pluto's "expects us to have ID_NULL" path): encrypted, never clear.
        # tests/integration/test_policy_pairs.py goes through every pair.
        plain.initiate_oe(plain.host.address, server.host.address)
        _wait_for(plain, r"established IKE SA; authenticated peer using authby=null")
        _wait_for(server, r"expects us to have ID_NULL and connection allows AUTH_NULL")
        assert "X509: authentication failed" not in plain.log_text()


def test_pluto_refusal_restores_the_previous_policy(lab: Lab) -> None:
    """A policy that passes addconn --checkconfig and oeagent's checks but that pluto will not
    load (here: oeagent looks at another NSS database than pluto, so pluto lacks leftcert)."""
    with plutos("solo") as (node,):
        other = f"sql:{node.dir / 'other-nss'}"
        (node.dir / "other-nss").mkdir()
        _run("certutil", "-N", "-d", other, "--empty-password")
        ca = ScratchCA.create(node.dir / "ca")
        chain, _, _ = ca.issue("server.oe.test")
        _run("certutil", "-A", "-d", other, "-n", "oeagent", "-t", ",,", "-a", "-i", str(chain))
        node.start()
        assert _policy_cli(node, _node_config(lab, node, {})).returncode == 0
        before = {p: p.read_text() for p in node.ipsec_dir.rglob("*") if p.is_file()}
        bad = _node_config(lab, node, {"host.names": ["server.oe.test"], "nss.database": other})
        _enrolled(node, other)
        refused = _policy_cli(node, bad)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "pluto refused oeagent-responder" in refused.stderr
        assert "the previous policy is restored and loaded" in refused.stderr
        after = {p: p.read_text() for p in node.ipsec_dir.rglob("*") if p.is_file()}
        assert after == before
        status = node.whack("--status")
        assert '"oeagent-private-or-clear' in status and '"oeagent-responder"' not in status


def test_enforce_peer_refuses_a_valid_certificate_for_another_name(lab: Lab) -> None:
    """The libreswan LE model's weakness (%fromcert + rightca=%any accepts any certificate)
    is closed: the per-peer conn wants @server.oe.test, and a certificate that chains to a
    trusted root but names someone else is refused; traffic to the peer never goes clear."""
    with plutos("impostor", "client") as (server, client):
        _responder(server, "impostor.oe.test", client)
        assert _policy_cli(server, _node_config(lab, server, {"host.names": ["impostor.oe.test"]})
                           ).returncode == 0
        remember_peer(client.dir / "state", "server.oe.test", server.host.address)
        assert _policy_cli(client, _node_config(lab, client, {})).returncode == 0

        client.initiate_oe(client.host.address, server.host.address)
        _wait_for(client, r"authentication failed; peer certificate subjectAltName extension "
                          r"does not match ID_FQDN 'server.oe.test'")
        assert client.ike_sa_counts()["authenticated"] == 0
        # Traffic to the peer still hits its own trap (ESP template; the per-peer conn's
        # priority beats the NULL group's): nothing goes out in clear after the failure.
        xfrm = client.host.run(["ip", "xfrm", "policy"]).stdout
        blocks = ("\n" + xfrm).split("\nsrc ")
        to_peer = [b for b in blocks
                   if b.startswith(f"{client.host.address}/32 dst {server.host.address}/32")]
        assert to_peer and all("proto esp" in b for b in to_peer), to_peer


def test_ipv6_null_oe_with_the_generated_policy(lab: Lab) -> None:
    """IPv6 gets its own group conns (hostaddrfamily=ipv6); pluto loads them and two hosts
    meet with NULL OE over IPv6 (2001:db8::/64 exists only inside the namespaces)."""
    with plutos("v6a", "v6b") as nodes:
        for i, node in enumerate(nodes):
            node.host.run(["ip", "addr", "add", f"2001:db8::{10 + i}/64", "dev", "eth0", "nodad"])
            node.host.run(["ip", "-6", "route", "add", "default", "via", "2001:db8::1"])
            node.start()
            cfg = _node_config(lab, node, {"policy.private_or_clear": ["198.51.100.0/24",
                                                                       "2001:db8::/64"]})
            done = _policy_cli(node, cfg)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "2001:db8::/64" in (node.ipsec_dir / "policies" / "oeagent-private-or-clear-6"
                                       ).read_text()
        nodes[0].initiate_oe("2001:db8::10", "2001:db8::11")
        _wait_for(nodes[0], r"oeagent-private-or-clear-6#2001:db8::/64.*established IKE SA; "
                            r"authenticated peer using authby=null")


def _updown_of(status: str, conn: str) -> str:
    """The updown command pluto holds for ``conn`` (``my_updown=`` in ``whack --status``)."""
    match = re.search(rf'^000 "{re.escape(conn)}"(?:\[\d+\])?:.* my_updown=([^;]*);', status,
                      re.MULTILINE)
    assert match, f"{conn} has no my_updown= in pluto's status"
    return match.group(1)


def test_peer_conns_run_no_updown_unless_configured(lab: Lab) -> None:
    """Per-peer conns reach pluto with their updown disabled (routing each through
    ``ipsec _updown`` was most of a large load); ``policy.peer_updown`` gives them one,
    and changing it reloads them."""
    with plutos("updown") as (node,):
        node.start()
        remember_peer(node.dir / "state", "db.oe.test", "198.51.100.60")
        remember_peer(node.dir / "state", "try.oe.test", "198.51.100.61", mode="testing")
        done = _policy_cli(node, _node_config(lab, node, {}))
        assert done.returncode == 0, done.stdout + done.stderr
        status = node.whack("--status")
        assert _updown_of(status, "oeagent-peer-db_oe_test-1") == "<disabled>"
        assert _updown_of(status, "oeagent-peer-try_oe_test-1") == "<disabled>"
        # The NULL groups keep pluto's default.
        assert _updown_of(status, "oeagent-private-or-clear") == "ipsec _updown"

        verbs = node.dir / "verbs.txt"
        script = node.dir / "record-updown"
        script.write_text(f'#!/bin/sh\necho "$PLUTO_VERB $PLUTO_CONNECTION" >> {verbs}\n')
        script.chmod(0o755)
        done = _policy_cli(node, _node_config(lab, node, {"policy.peer_updown": str(script)}))
        assert done.returncode == 0, done.stdout + done.stderr
        status = node.whack("--status")
        assert _updown_of(status, "oeagent-peer-db_oe_test-1") == str(script)
        assert _updown_of(status, "oeagent-peer-try_oe_test-1") == str(script)
        # pluto runs it: routing the re-added testing peer's conn. (The enforce peer's
        # route, the kernel's and updown's part, belongs to the oeagent-enforced group's
        # instance for its address, there first; pluto installs the conn's trap beside it.)
        assert "route-host oeagent-peer-try_oe_test-1#198.51.100.61/32" in \
            verbs.read_text().splitlines()


def test_group_files_no_longer_generated_are_removed(
    make_lab_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import oeagent.policy as policy_module

    cfg = config_module.load(make_lab_config())
    monkeypatch.setattr(policy_module, "_has_ipv6_default_route", lambda: True)
    apply(cfg, Reporter(stream=io.StringIO()), now=NOW)
    six = cfg.pluto.ipsec_dir / "policies" / "oeagent-private-or-clear-6"
    assert six.read_text().splitlines()[1:] == ["::/0"]
    monkeypatch.setattr(policy_module, "_has_ipv6_default_route", lambda: False)
    dry = apply(cfg, Reporter(stream=io.StringIO()), dry_run=True, now=NOW)
    assert "-::/0" in dry["diff"] and "conn oeagent-private-or-clear-6" in dry["diff"]
    apply(cfg, Reporter(stream=io.StringIO()), now=NOW)
    assert not six.exists()
    assert "oeagent-private-or-clear-6" not in (cfg.pluto.ipsec_dir / "oeagent.conf").read_text()
