"""The end-to-end scenario: oeagent on real pluto peers in network namespaces.

    with Scenario(Path("/tmp/oe6-x")) as sc:      # lab + hosts up, everyone enrolled/configured
        sc.initiate("client", "server")
        sc.wait_log("client", r"established IKE SA; authenticated peer .* '@server.oe.test'")

What ``up()`` does, on top of ``lab.topology.Topology`` (hosts and their plutos):

- **server** (server.oe.test, signed zone): ``oeagent enroll`` from Pebble with dns-01 and
  publishes through ``rfc2136`` (TLSA, IPSECKEY, ``_oe`` TXT), verified through the lab's
  unbound (``publish.resolver_trusted``: the resolver sits on the private bridge);
  ``oeagent policy`` (the responder conn with its certificate, NULL OE for the rest);
- **webonly** (web.insecure.oe.test, unsigned delegation): ``oeagent enroll`` with http-01,
  ``oeagent serve`` answering the well-known document on its own address, ``oeagent
  publish`` (backend ``wellknown``, mode ``serve``), ``oeagent policy``;
- **impostor** (impostor.oe.test): ``oeagent enroll`` (a valid Pebble certificate for its
  own name) and ``oeagent policy``; then server.oe.test gets a second A record pointing at
  the impostor: an address the DNS says belongs to an advertised ``enforce`` name;
- **plain**: libreswan's plain NULL-auth OE, no oeagent;
- **client**: Pebble's root as its only trust anchor, ``oeagent discover server.oe.test
  web.insecure.oe.test``, ``oeagent policy`` (per-peer authenticated conns, NULL OE else).

Every oeagent command runs inside the host's namespace, next to that host's pluto, exactly
as on a real machine. Evidence comes from pluto: its log, ``whack --briefstatus``,
``--trafficstatus`` and ``--shuntstatus``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.rdatatype

from lab.procs import LabError
from lab.topology import LAB_HOST_NUMBER, OeHost, Topology

REPO = Path(__file__).resolve().parent.parent
SUBNET = "198.51.100.0/24"
LAB_ADDRESS = f"198.51.100.{LAB_HOST_NUMBER}"


def esp_probe(host: OeHost) -> tuple[bool, str]:
    """Can this kernel install an ESP SA? (``ip xfrm state add ... proto esp`` in ``host``)."""
    spi = "0x" + secrets.token_hex(4)
    argv = ["ip", "xfrm", "state", "add", "src", host.address, "dst", LAB_ADDRESS,
            "proto", "esp", "spi", spi, "mode", "tunnel",
            "enc", "cbc(aes)", "0x" + secrets.token_hex(16),
            "auth", "hmac(sha256)", "0x" + secrets.token_hex(32)]
    result = host.host.run(argv, check=False)
    if result.returncode == 0:
        host.host.run(["ip", "xfrm", "state", "del", "src", host.address, "dst", LAB_ADDRESS,
                       "proto", "esp", "spi", spi], check=False)
        return True, "ESP SAs can be installed"
    reason = (result.stderr or result.stdout).strip()
    return False, (f"this kernel has no ESP (`ip xfrm state add ... proto esp`: {reason}): "
                   "Child SAs cannot be installed, so only the IKE SA is checked")


class Scenario:
    def __init__(self, directory: Path, log: Any = None) -> None:
        self.dir = Path(directory)
        self.topo = Topology(self.dir)
        self.log = log or (lambda message: None)
        self.configs: dict[str, Path] = {}

    def __enter__(self) -> Scenario:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.topo.close()

    @property
    def hosts(self) -> dict[str, OeHost]:
        return self.topo.hosts

    # ---- oeagent inside a host -----------------------------------------------------------

    def config(self, name: str, overrides: dict[str, Any], file: str = "oeagent.toml") -> Path:
        host = self.hosts[name]
        info = self.topo.info
        settings: dict[str, Any] = {
            "host.names": [host.fqdn],
            "challenge.http.listen_address": host.address,
            "pluto.ctlsocket": str(host.pluto.ctlsocket),
            "pluto.ipsec_dir": str(host.pluto.ipsec_dir),
            "pluto.config": str(host.pluto.config),
            "nss.database": host.pluto.nss_database,
            "state_dir": str(host.dir / "state"),
            "publish.resolver": info.bind_address,
            "publish.resolver_trusted": True,
            "publish.wellknown.listen_address": host.address,
            "publish.wellknown.ca_bundle": str(info.pebble_root_pem),
            "discovery.resolver": info.bind_address,
            "discovery.resolver_port": info.unbound_port,
            "discovery.resolver_trusted": True,
            "discovery.https_port": info.https_port,
            "discovery.https_ca_bundle": str(info.pebble_root_pem),
            "policy.private_or_clear": [SUBNET],
        }
        settings.update(overrides)
        assert self.topo.lab is not None
        path = self.topo.lab.write_config(host.dir / file, settings, root=host.dir)
        if file == "oeagent.toml":
            self.configs[name] = path
        return path

    def _argv(self, config: Path, args: tuple[str, ...]) -> list[str]:
        return ["env", f"PYTHONPATH={REPO}", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
                sys.executable, "-m", "oeagent", "--config", str(config), *args]

    def oeagent(self, name: str, *args: str, config: Path | None = None, check: bool = True,
                timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``oeagent ARGS`` inside host ``name``'s namespace; raise with its output on failure."""
        config = config or self.configs[name]
        result = self.hosts[name].host.run(self._argv(config, args), check=False,
                                           timeout=timeout)
        if check and result.returncode != 0:
            raise LabError(f"[{name}] oeagent {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def oeagent_json(self, name: str, *args: str, **kwargs: Any) -> dict[str, Any]:
        out = self.oeagent(name, "--json", *args, **kwargs).stdout
        document: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return document

    # ---- set-up --------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        self.topo.up()
        info = self.topo.info
        self.log(f"lab up in its namespace at {info.bind_address}; hosts: "
                 + ", ".join(f"{h.name} {h.address}" for h in self.hosts.values()))
        for host in self.hosts.values():
            host.pluto.start()
        # server: dns-01 (its A records may point elsewhere too), advertised in signed DNS.
        self.config("server", {"challenge.type": "dns-01", "challenge.dns.server": LAB_ADDRESS,
                               "publish.backends": ["rfc2136"]})
        self.oeagent("server", "enroll")
        self.log("server: enrolled from Pebble (dns-01) and published TLSA/IPSECKEY/_oe "
                 "through RFC 2136, verified with the AD bit")
        # webonly: http-01, the document answered by `oeagent serve` on its own address.
        enroll_only = self.config("webonly", {}, file="enroll.toml")
        self.oeagent("webonly", "enroll", config=enroll_only)
        self.config("webonly", {"publish.backends": ["wellknown"],
                                "publish.wellknown.mode": "serve",
                                "publish.wellknown.port": info.https_port})
        webonly = self.hosts["webonly"]
        webonly.host.spawn(self._argv(self.configs["webonly"], ("serve",)),
                           str(webonly.dir / "serve.log"))
        waited = time.monotonic()
        self._wait_port(webonly, info.https_port)
        self.log(f"webonly: `oeagent serve` listening after {time.monotonic() - waited:.1f} s")
        self.oeagent("webonly", "publish")
        self.log("webonly: enrolled (http-01), `oeagent serve` answers "
                 "https://web.insecure.oe.test/.well-known/oe-ipsec, verified over HTTPS")
        # impostor: a valid certificate, for its own name only.
        self.config("impostor", {})
        self.oeagent("impostor", "enroll")
        self.add_address("server.oe.test", self.hosts["impostor"].address)
        self.log("impostor: enrolled as impostor.oe.test; server.oe.test now also has an A "
                 "record pointing at the impostor")
        for name in ("server", "webonly", "impostor"):
            self.oeagent(name, "policy")
        # plain: libreswan's NULL OE, nothing else.
        plain = self.hosts["plain"]
        plain.pluto.use_null_oe(SUBNET)
        (plain.pluto.ipsec_dir / "policies" / "clear").write_text(f"{LAB_ADDRESS}/32\n")
        plain.pluto.load()
        # client: Pebble's root in pluto's NSS, discovery, policy.
        client = self.hosts["client"]
        subprocess.run(["certutil", "-A", "-d", client.pluto.nss_database, "-n", "pebble-root",
                        "-t", "CT,,", "-a", "-i", str(info.pebble_root_pem)],
                       check=True, capture_output=True, timeout=30)
        self.config("client", {})
        # unbound caches answers up to 5 s; it may still hold the zone's 127.0.0.1 for
        # server.oe.test (its readiness check asked for it).
        self.wait_resolver("server.oe.test", {self.hosts["server"].address,
                                              self.hosts["impostor"].address})
        found = self.discover("server.oe.test", "web.insecure.oe.test")
        self.log("client: discovered " + "; ".join(
            f"{p['peer']} {p['status']} via {p.get('source')} at {','.join(p['addresses'])}"
            for p in found))
        self.oeagent("client", "policy")
        self.log(f"client: policy installed ({time.monotonic() - started:.0f} s since start)")

    def discover(self, *peers: str) -> list[dict[str, Any]]:
        out = self.oeagent("client", "--json", "discover", *peers).stdout
        rows = [json.loads(line) for line in out.strip().splitlines()]
        return [row for row in rows if "peer" in row]

    def add_address(self, fqdn: str, address: str) -> None:
        """One more A record for ``fqdn`` in the signed zone (an RFC 2136 update)."""
        lab = self.topo.lab
        assert lab is not None
        update = lab.update_message()
        update.add(f"{fqdn}.", 60, dns.rdatatype.A, address)
        if lab.send_update(update).rcode() != 0:
            raise LabError(f"adding {fqdn} -> {address} failed")
        deadline = time.monotonic() + 5
        while address not in [getattr(r, "address", None)
                              for rrset in lab.dig(fqdn).answer for r in rrset]:
            if time.monotonic() > deadline:
                raise LabError(f"BIND does not serve {fqdn} -> {address}")
            time.sleep(0.02)

    def wait_resolver(self, fqdn: str, addresses: set[str], timeout: float = 10) -> None:
        """Wait until the lab's validating resolver answers exactly ``addresses``."""
        lab = self.topo.lab
        assert lab is not None
        deadline = time.monotonic() + timeout
        while True:
            served = {getattr(r, "address", None)
                      for rrset in lab.dig(fqdn, resolver=True).answer for r in rrset} - {None}
            if served == addresses:
                return
            if time.monotonic() > deadline:
                raise LabError(f"the resolver answers {fqdn} -> {served}, not {addresses}")
            time.sleep(0.2)

    def _wait_port(self, host: OeHost, port: int, timeout: float = 30) -> None:
        probe = ("import socket,sys\n"
                 f"socket.create_connection(('{host.address}', {port}), 0.5).close()\n")
        deadline = time.monotonic() + timeout
        while host.host.run([sys.executable, "-c", probe], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"nothing listens on {host.address}:{port} in {host.name}")
            time.sleep(0.1)

    # ---- triggering and evidence ---------------------------------------------------------

    def initiate(self, src: str, dst: str) -> str:
        """``whack --oppohere SRC --oppothere DST`` on ``src``'s pluto (deterministic OE)."""
        a, b = self.hosts[src], self.hosts[dst]
        return a.pluto.initiate_oe(a.address, b.address)

    def send_packet(self, src: str, dst: str, port: int = 5001) -> None:
        """One UDP datagram from ``src`` to ``dst``: the kernel's trap policy starts OE."""
        b = self.hosts[dst]
        code = ("import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.sendto(b'oe', ('{b.address}', {port}))\n")
        self.hosts[src].host.run([sys.executable, "-c", code], check=False)

    def log_offset(self, name: str) -> int:
        return len(self.hosts[name].pluto.log_text())

    def wait_log(self, name: str, pattern: str, since: int = 0, timeout: float = 15) -> str:
        """The first pluto log line of ``name`` (after offset ``since``) matching ``pattern``."""
        pluto = self.hosts[name].pluto
        deadline = time.monotonic() + timeout
        while True:
            text = pluto.log_text()[since:]
            for line in text.splitlines():
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in {name}'s pluto log:\n{text[-4000:]}")
            time.sleep(0.1)

    def peer_conn(self, fqdn: str, address: str) -> str:
        """The client's per-peer conn name for ``fqdn`` at ``address``."""
        conf = (self.hosts["client"].pluto.ipsec_dir / "oeagent.conf").read_text()
        for block in conf.split("\nconn ")[1:]:
            name = block.split(None, 1)[0]
            if f"right={address}\n" in block and f"rightid=@{fqdn}\n" in block:
                return name
        raise LabError(f"the client has no conn for {fqdn} at {address}")

    def forget_sas(self, name: str, conn: str) -> None:
        """Delete the IKE SAs ``name``'s pluto holds for ``conn``, so the next one is new."""
        pluto = self.hosts[name].pluto
        status = pluto.whack("--status", check=False)
        for number in re.findall(rf'#(\d+): "{re.escape(conn)}"[^\n]*ESTABLISHED_IKE_SA', status):
            pluto.whack("--deletestate", number, check=False)

    def pluto_alive(self, name: str) -> bool:
        """Is ``name``'s pluto (the first process started in that host) still running?"""
        processes = self.hosts[name].host.processes
        return bool(processes) and processes[0].poll() is None

    def restart_pluto(self, name: str) -> None:
        """Start ``name``'s pluto again (as systemd would) and load its conns again."""
        host = self.hosts[name]
        for stale in (host.pluto.ctlsocket, host.pluto.run_dir / "pluto.pid"):
            stale.unlink(missing_ok=True)
        host.pluto.start()
        if name in self.configs:
            self.oeagent(name, "policy")
        else:
            host.pluto.load()


# ---- `python -m lab.e2e DIR`: the scenario as `make demo` shows it ------------------------

AUTHENTICATED = (r"established IKE SA; authenticated peer .* using peer certificate "
                 r"'@{fqdn}' issued by CA '([^']*)'")
NULL_AUTH = r"established IKE SA; authenticated peer using authby=null"


def _pluto_serial(sc: Scenario, name: str) -> str:
    out = sc.oeagent(name, "--json", "status", check=False).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return str(report["pluto"].get("serial"))


def _received(path: Path, sender: str, wait: float) -> bool:
    time.sleep(wait)
    return sender in path.read_text()


def listen_udp(sc: Scenario, name: str, port: int) -> Path:
    """A UDP listener in host ``name`` that appends what it receives to a file."""
    host = sc.hosts[name]
    out = host.dir / f"udp-{port}.txt"
    out.write_text("")
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('{host.address}', {port}))\n"
            "while True:\n"
            "    data, peer = s.recvfrom(2048)\n"
            f"    open('{out}', 'a').write(peer[0] + ' ' + data.decode() + '\\n')\n")
    host.host.spawn([sys.executable, "-c", code], str(host.dir / f"udp-{port}.log"))
    probe = ("import socket\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             f"s.sendto(b'self', ('{host.address}', {port}))\n")
    deadline = time.monotonic() + 5
    while "self" not in out.read_text():  # the listener is up (a local datagram arrived)
        if time.monotonic() > deadline:
            raise LabError(f"UDP listener in {name} did not start")
        host.host.run([sys.executable, "-c", probe], check=False)
        time.sleep(0.1)
    return out


def demo_rows(sc: Scenario) -> list[tuple[str, str, str, bool]]:
    """Run the table of issue 6; each row: (from -> to, expected, what happened, ok)."""
    rows: list[tuple[str, str, str, bool]] = []
    h = sc.hosts

    def row(pair: str, expected: str, action: Any) -> None:
        try:
            happened, ok = action()
        except (AssertionError, LabError) as exc:
            happened, ok = f"FAILED: {str(exc).splitlines()[0][:150]}", False
        rows.append((pair, expected, happened, ok))

    def client_server() -> tuple[str, bool]:
        since = sc.log_offset("client")
        sc.initiate("client", "server")
        line = sc.wait_log("client", AUTHENTICATED.format(fqdn="server.oe.test"), since)
        issuer = re.search(r"issued by CA '([^']*)'", line)
        return (f"IKE SA, peer authenticated by certificate '@server.oe.test' (issuer "
                f"{issuer.group(1) if issuer else '?'}), whack --oppohere/--oppothere", True)

    def client_webonly() -> tuple[str, bool]:
        since = sc.log_offset("client")
        sc.send_packet("client", "webonly")
        sc.wait_log("client", "initiate on-demand for packet", since)
        sc.wait_log("client", AUTHENTICATED.format(fqdn="web.insecure.oe.test"), since)
        return ("IKE SA, peer authenticated by certificate '@web.insecure.oe.test'; "
                "started by one UDP packet hitting the trap", True)

    def client_plain() -> tuple[str, bool]:
        since = sc.log_offset("client")
        sc.initiate("client", "plain")
        sc.wait_log("client", NULL_AUTH, since)
        counts = h["client"].pluto.ike_sa_counts()
        return (f"IKE SA with NULL authentication (client briefstatus: anonymous("
                f"{counts.get('anonymous')}))", True)

    def plain_server() -> tuple[str, bool]:
        since, plain_since = sc.log_offset("server"), sc.log_offset("plain")
        sc.initiate("plain", "server")
        sc.wait_log("server", rf"{h['plain'].address} #\d+: responder " + NULL_AUTH, since)
        sc.wait_log("plain", NULL_AUTH, plain_since)
        return ("IKE SA with NULL authentication on both sides: the server's responder "
                "accepted plain (NULL only) and answered it with NULL", True)

    def client_impostor() -> tuple[str, bool]:
        received = listen_udp(sc, "impostor", 5003)
        since = sc.log_offset("client")
        sc.initiate("client", "impostor")
        sc.wait_log("client", r"subjectAltName extension does not match ID_FQDN "
                              r"'server.oe.test'", since)
        sc.send_packet("client", "impostor", 5003)
        leaked = _received(received, h["client"].address, 1.5)
        counts = h["client"].pluto.ike_sa_counts()
        return (f"no SA: its certificate (impostor.oe.test) does not match @server.oe.test; "
                f"a UDP packet to it {'ARRIVED IN CLEAR' if leaked else 'was dropped'}; "
                f"authenticated IKE SAs still {counts.get('authenticated')}", not leaked)

    def after_renewal() -> tuple[str, bool]:
        old = _pluto_serial(sc, "server")
        sc.oeagent("server", "renew", "--force")
        alive = sc.pluto_alive("server")
        new = _pluto_serial(sc, "server")
        conn = sc.peer_conn("server.oe.test", h["server"].address)
        sc.forget_sas("client", conn)
        since = sc.log_offset("client")
        sc.initiate("client", "server")
        sc.wait_log("client", AUTHENTICATED.format(fqdn="server.oe.test"), since)
        return (f"serial {old} -> {new} in the server's pluto; a new IKE SA authenticated "
                f"'@server.oe.test' (pluto {'kept running' if alive else 'CRASHED'})",
                alive and new != old)

    def after_unenroll() -> tuple[str, bool]:
        sc.oeagent("server", "unenroll", "--remove-nss")
        first = {p["peer"]: p["status"] for p in sc.discover("server.oe.test")}
        sc.oeagent("server", "unenroll", "--purge")
        second = {p["peer"]: p["status"] for p in sc.discover("server.oe.test")}
        sc.oeagent("server", "policy")
        sc.oeagent("client", "policy")
        since = sc.log_offset("client")
        sc.initiate("client", "server")
        sc.wait_log("client", NULL_AUTH, since)
        return (f"discovery: mode none -> {first['server.oe.test']}, withdrawn -> "
                f"{second['server.oe.test']}; then an IKE SA with NULL authentication", True)

    row("client -> server", "authenticated by its certificate, id = its FQDN (DNSSEC)",
        client_server)
    row("client -> webonly", "same, found through the HTTPS document", client_webonly)
    row("client -> plain", "NULL-authenticated IKE SA (not clear)", client_plain)
    row("plain -> server", "an IKE SA the server accepts", plain_server)
    row("client -> impostor", "no SA; dropped, not clear", client_impostor)
    row("client -> server (renewed)", "new IKE SA with the new certificate", after_renewal)
    row("client -> server (unenrolled)", "falls back to NULL OE", after_unenroll)
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="a short, empty directory (socket paths)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {message}", flush=True)

    with Scenario(args.dir, log=say) as sc:
        esp, reason = esp_probe(sc.hosts["client"])
        say(f"ESP probe: {reason}")
        rows = demo_rows(sc)
    print()
    print("| from -> to | expected | what happened (pluto's logs and whack) | |")
    print("|---|---|---|---|")
    for pair, expected, happened, ok in rows:
        print(f"| {pair} | {expected} | {happened} | {'ok' if ok else 'FAILED'} |")
    print()
    if not esp:
        print(f"Data plane not shown: {reason}.")
    failed = [pair for pair, _, _, ok in rows if not ok]
    say("namespaces, plutos and lab stopped; " +
        (f"FAILED: {', '.join(failed)}" if failed else "every row as expected"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
