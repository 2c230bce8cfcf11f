"""Hosts in network namespaces, joined by a bridge in the root namespace.

    with Network() as net:                     # bridge 198.51.100.1/24 in the root namespace
        server = net.add_host("server", 10)    # namespace with eth0 = 198.51.100.10/24
        server.run(["ip", "addr"])

Every name carries a random tag, so two networks (two test sessions) never collide, and
``close()`` removes every namespace, link and process it created. Addresses come from
198.51.100.0/24 (TEST-NET-2) and exist only inside this machine; nothing is routed anywhere
else. NOT 192.0.2.0/24: on this machine kind the VM's own uplink (eth0) is 192.0.2.2/24 with
its default gateway at 192.0.2.1, so a second 192.0.2.0/24 in the root namespace would send
lab traffic out of the machine, and the root namespace answers ARP for 192.0.2.2.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from lab.procs import LabError

SUBNET = "198.51.100"
GATEWAY = f"{SUBNET}.1"
_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_namespace(namespace: str | None) -> Iterator[None]:
    """Run the enclosed code (this thread, and processes it starts) in ``namespace``.

    The lab that serves namespaced hosts can run in a namespace of its own (a host on the
    bridge like any other); the test process steps in to talk to it. ``None`` means: stay.
    """
    if namespace is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise LabError(f"setns({namespace}) failed: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(original, _CLONE_NEWNET) != 0:
                raise LabError("could not return to the original network namespace")
    finally:
        os.close(original)
        os.close(target)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace and wait for it."""
        result = subprocess.run(self.argv(argv), capture_output=True, text=True,
                                timeout=timeout, input=input_text, check=False)
        if check and result.returncode != 0:
            raise LabError(f"[{self.name}] {' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def spawn(self, argv: Sequence[str], log_path: str) -> subprocess.Popen[bytes]:
        """Start a long-running process in this namespace; ``Network.close`` stops it."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()


class Network:
    """A bridge with ``GATEWAY`` in the root namespace and hosts behind it."""

    def __init__(self, prefix: str = "oe") -> None:
        if os.geteuid() != 0:
            raise LabError("network namespaces need root")
        # Interface names are limited to 15 characters: keep the tag short.
        self.tag = f"{prefix}{secrets.token_hex(2)}"
        self.bridge = f"{self.tag}br"
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []
        self._up = False

    def __enter__(self) -> Network:
        self.up()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._up = True
        _ip("addr", "add", f"{GATEWAY}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str, number: int) -> Host:
        """A namespace with eth0 = 198.51.100.<number>/24 and a default route via the bridge."""
        if not 2 <= number <= 254 or name in self.hosts:
            raise LabError(f"bad host {name!r} / {number}")
        namespace = f"{self.tag}-{name}"
        outside, inside = f"{self.tag}{number}o", f"{self.tag}{number}i"
        _ip("netns", "add", namespace)
        host = Host(name, namespace, f"{SUBNET}.{number}")
        self.hosts[name] = host
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self._links.append(outside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", namespace, "link", "set", inside, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", GATEWAY)
        return host

    def close(self) -> None:
        """Stop every process, delete every namespace and link; safe to call twice."""
        for host in self.hosts.values():
            host.stop_processes()
            _ip("netns", "del", host.namespace, check=False)
        self.hosts.clear()
        for link in self._links:
            _ip("link", "del", link, check=False)
        self._links.clear()
        if self._up:
            _ip("link", "del", self.bridge, check=False)
            self._up = False
