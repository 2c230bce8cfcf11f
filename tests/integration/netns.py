"""Real pluto daemons in network namespaces, for policy load tests.

Namespaces are named ``oe5-<random>-<n>`` and always deleted; addresses come from
192.0.2.0/24 inside them only; each pluto has its own config, NSS database and run dir
under a short /tmp directory (control socket paths must stay under 108 bytes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PLUTO = "/usr/libexec/ipsec/pluto"


def run(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Node:
    ns: str
    address: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "pluto.log"

    @property
    def ipsec_dir(self) -> Path:
        return self.dir / "ipsec.d"

    @property
    def nss(self) -> str:
        return f"sql:{self.dir / 'nss'}"

    @property
    def ctl(self) -> Path:
        return self.dir / "run" / "pluto.ctl"

    @property
    def config(self) -> Path:
        return self.dir / "ipsec.conf"

    def start_pluto(self) -> None:
        (self.dir / "run").mkdir(exist_ok=True)
        self.ipsec_dir.mkdir(exist_ok=True)
        (self.ipsec_dir / "policies").mkdir(exist_ok=True)
        secrets = self.dir / "ipsec.secrets"
        secrets.write_text("")
        self.config.write_text(
            "config setup\n\tdnssec-enable=no\n\tplutodebug=none\n"
            f"include {self.ipsec_dir}/*.conf\n"
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, PLUTO, "--config", str(self.config), "--nofork",
                 "--stderrlog", "--rundir", str(self.dir / "run"), "--nssdir",
                 str(self.dir / "nss"), "--ipsecdir", str(self.ipsec_dir),
                 "--secretsfile", str(secrets)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not self.ctl.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pluto in {self.ns} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def whack(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run("ipsec", "whack", "--ctlsocket", str(self.ctl), *args, check=check)

    def stop_pluto(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[Node]]:
    """``count`` namespaces on one bridge-less star: node 0 is linked to every other node."""
    if os.geteuid() != 0 or shutil.which("ip") is None or not Path(PLUTO).exists():
        import pytest

        pytest.skip("needs root, iproute2 and libreswan's pluto")
    tag = uuid.uuid4().hex[:6]
    base = Path(tempfile.mkdtemp(prefix="oe5-", dir="/tmp"))
    nodes = [Node(f"oe5-{tag}-{i}", f"192.0.2.{i + 1}", base / str(i)) for i in range(count)]
    try:
        for node in nodes:
            node.dir.mkdir()
            run("ip", "netns", "add", node.ns)
            run("ip", "-n", node.ns, "link", "set", "lo", "up")
        # A bridge in node 0's namespace joins everyone on 192.0.2.0/24; the default route
        # (which %defaultroute needs) points at an unused address on that link, never off it.
        bridge = f"oe5{tag}br"
        run("ip", "-n", nodes[0].ns, "link", "add", bridge, "type", "bridge")
        run("ip", "-n", nodes[0].ns, "addr", "add", f"{nodes[0].address}/24", "dev", bridge)
        run("ip", "-n", nodes[0].ns, "link", "set", bridge, "up")
        for i, node in enumerate(nodes[1:], 1):
            a, b = f"oe5{tag}a{i}", f"oe5{tag}b{i}"
            run("ip", "link", "add", a, "netns", nodes[0].ns, "type", "veth", "peer", "name", b,
                "netns", node.ns)
            run("ip", "-n", nodes[0].ns, "link", "set", a, "master", bridge, "up")
            run("ip", "-n", node.ns, "addr", "add", f"{node.address}/24", "dev", b)
            run("ip", "-n", node.ns, "link", "set", b, "up")
        for node in nodes:
            run("ip", "-n", node.ns, "route", "add", "default", "via", "192.0.2.254")
        yield nodes
    finally:
        for node in nodes:
            node.stop_pluto()
        for node in nodes:
            run("ip", "netns", "delete", node.ns, check=False)
        shutil.rmtree(base, ignore_errors=True)


def esp_available() -> bool:
    """Whether this kernel can install ESP states (this machine kind cannot)."""
    ns = f"oe5-{uuid.uuid4().hex[:6]}-esp"
    run("ip", "netns", "add", ns)
    try:
        probe = run("ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst",
                    "192.0.2.2", "proto", "esp", "spi", "0x100", "enc", "cbc(aes)",
                    "0x" + "00" * 16, "auth", "hmac(sha256)", "0x" + "00" * 32, check=False)
        return probe.returncode == 0
    finally:
        run("ip", "netns", "delete", ns, check=False)
