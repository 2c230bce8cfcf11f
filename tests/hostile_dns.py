"""A small DNS server on loopback, UDP and TCP, that answers whatever a test makes it answer.

Two uses: a tampering proxy (``forwarding(port, mutate)``: ask the lab's BIND, let the test
rewrite the reply) and a hostile resolver (``respond`` builds the whole reply). Replies larger
than the client's UDP payload go out truncated (TC) over UDP, as a real server does, so a
client falls back to TCP, where replies up to 64 KiB are sent whole.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.query

Respond = Callable[[dns.message.Message], dns.message.Message | None]
"""The reply to send for a request, or None to stay silent."""


def forwarding(upstream_port: int, mutate: Callable[[dns.message.Message], None]) -> Respond:
    """Forward to a server on 127.0.0.1:``upstream_port`` (TCP) and let ``mutate`` edit the
    reply."""

    def respond(request: dns.message.Message) -> dns.message.Message:
        reply = dns.query.tcp(request, "127.0.0.1", port=upstream_port, timeout=2)
        mutate(reply)
        return reply

    return respond


class HostileDNS:
    """``with HostileDNS(respond) as server:`` serves on 127.0.0.1:``server.port``."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.udp, self.tcp = _bind_pair()
        self.port: int = self.udp.getsockname()[1]
        for s in (self.udp, self.tcp):
            s.settimeout(0.1)
        self.queries: list[tuple[str, dns.message.Message]] = []
        """(transport, request) for every query received: "udp" or "tcp"."""
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]

    def __enter__(self) -> HostileDNS:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()

    def _reply(self, wire: bytes, transport: str
               ) -> tuple[dns.message.Message, dns.message.Message] | None:
        try:
            request = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        self.queries.append((transport, request))
        reply = self.respond(request)
        return None if reply is None else (request, reply)

    def _serve_udp(self) -> None:
        while not self.stopped.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            got = self._reply(wire, "udp")
            if got is None:
                continue
            request, reply = got
            out = reply.to_wire(max_size=65535)
            limit = max(512, request.payload) if request.edns >= 0 else 512
            if len(out) > limit:  # what a real server does: truncate, the client asks again
                short = dns.message.make_response(request)
                short.set_rcode(reply.rcode())
                short.flags |= dns.flags.TC
                out = short.to_wire()
            with contextlib.suppress(OSError):
                self.udp.sendto(out, peer)

    def _serve_tcp(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one_connection, args=(conn,), daemon=True).start()

    def _one_connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(2)
            while not self.stopped.is_set():
                head = _read(conn, 2)
                if head is None:
                    return
                wire = _read(conn, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                got = self._reply(wire, "tcp")
                if got is None:
                    return
                out = got[1].to_wire(max_size=65535)
                conn.sendall(struct.pack("!H", len(out)) + out)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free loopback port (retried: the port the kernel
    picks for UDP may be taken for TCP by someone else on a busy machine)."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no loopback port free for both UDP and TCP")


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
