"""The end-to-end lab: the services in a namespace of their own, and OE hosts around them.

    with Topology(Path("/tmp/oe6x")) as topo:
        topo.hosts["client"].pluto.initiate_oe(...)

Hosts (198.51.100.0/24 behind one bridge, each with its own pluto):

| host     | address | DNS name                 | role                                            |
|----------|---------|--------------------------|-------------------------------------------------|
| lab      | .2      | -                        | Pebble, BIND, unbound, nginx (lab.Lab)          |
| server   | .10     | server.oe.test (signed)  | enrolled, advertises through DNSSEC             |
| webonly  | .11     | web.insecure.oe.test     | enrolled, advertises through the HTTPS document |
| client   | .20     | client.oe.test           | discovery and policy only, no certificate       |
| plain    | .30     | plain.oe.test            | plain NULL-auth OE, no oeagent                  |
| impostor | .40     | impostor.oe.test         | a valid certificate for its own name only       |

The directory must be short: pluto's control socket path must fit in 107 bytes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.rdatatype

from lab.core import Lab, LabInfo
from lab.netns import Host, Network
from lab.pluto import Pluto
from lab.procs import LabError

HOSTS: dict[str, tuple[int, str]] = {
    "server": (10, "server.oe.test"),
    "webonly": (11, "web.insecure.oe.test"),
    "client": (20, "client.oe.test"),
    "plain": (30, "plain.oe.test"),
    "impostor": (40, "impostor.oe.test"),
}
LAB_HOST_NUMBER = 2


@dataclass
class OeHost:
    name: str
    fqdn: str
    host: Host
    pluto: Pluto
    dir: Path

    @property
    def address(self) -> str:
        return self.host.address


class Topology:
    def __init__(self, directory: Path, cert_validity_seconds: int | None = None) -> None:
        self.dir = Path(directory)
        self.cert_validity_seconds = cert_validity_seconds
        self.net = Network("oe6")
        self.lab: Lab | None = None
        self.hosts: dict[str, OeHost] = {}

    def __enter__(self) -> Topology:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def info(self) -> LabInfo:
        if self.lab is None:
            raise LabError("the topology is not up")
        return self.lab.info

    def up(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.net.up()
        lab_host = self.net.add_host("lab", LAB_HOST_NUMBER)
        self.lab = Lab(self.dir / "lab", self.cert_validity_seconds, address=lab_host.address,
                       namespace=lab_host.namespace)
        self.lab.up()
        for name, (number, fqdn) in HOSTS.items():
            host = self.net.add_host(name, number)
            pluto = Pluto(host, self.dir / name)
            pluto.prepare()
            self.hosts[name] = OeHost(name, fqdn, host, pluto, self.dir / name)
            self.point(fqdn, host.address)

    def point(self, fqdn: str, address: str) -> None:
        """Make ``fqdn`` resolve to ``address`` (an RFC 2136 update to the lab's BIND)."""
        assert self.lab is not None
        zone = "insecure.oe.test" if fqdn.endswith(".insecure.oe.test") else "oe.test"
        update = self.lab.update_message(zone)
        update.replace(f"{fqdn}.", 60, dns.rdatatype.A, address)
        reply = self.lab.send_update(update)
        if reply.rcode() != 0:
            raise LabError(f"updating {fqdn} failed: rcode {reply.rcode()}")
        deadline = time.monotonic() + 5  # inline signing serves the change a few ms later
        while True:
            served = [getattr(r, "address", None) for rrset in self.lab.dig(fqdn).answer
                      for r in rrset]
            if address in served:
                return
            if time.monotonic() > deadline:
                raise LabError(f"BIND does not serve {fqdn} -> {address}")
            time.sleep(0.02)

    def close(self) -> None:
        if self.lab is not None:
            with contextlib.suppress(LabError):
                self.lab.down()
        self.net.close()
