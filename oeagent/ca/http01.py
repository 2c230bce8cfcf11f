"""http-01 (RFC 8555 §8.3): serve ``/.well-known/acme-challenge/<token>`` while the CA looks.

Two ways: ``standalone`` runs a tiny responder of our own on the configured address and port
for the duration of the order; ``webroot`` drops files where an existing web server serves
them. Both are context managers that clean up on every exit path, failure included.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import ipaddress
import logging
import os
import re
import socket
import socketserver
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from oeagent.config import HttpChallengeConfig
from oeagent.errors import ChallengeError
from oeagent.fsio import PUBLIC_FILE, atomic_write

log = logging.getLogger(__name__)

PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 tokens are base64url; anything else could be a path traversal attempt.
TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def check_token(token: str) -> str:
    if not TOKEN.fullmatch(token):
        raise ChallengeError(f"the CA sent an http-01 token that is not base64url: {token[:40]!r}")
    return token


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "oeagent"
    sys_version = ""
    server: _Responder

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        token = path[len(PREFIX):] if path.startswith(PREFIX) else None
        body = self.server.answers.get(token) if token else None
        status = 200 if body is not None else 404
        payload = body.encode("ascii") if body is not None else b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if with_body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; that is debug detail for us.
        log.debug("http-01 responder: %s - %s", self.address_string(), format % args)


class _Responder(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: str, port: int, answers: Mapping[str, str]) -> None:
        self.answers = dict(answers)
        self.address_family = (socket.AF_INET6 if ipaddress.ip_address(address).version == 6
                               else socket.AF_INET)
        self._dual_stack = address == "::"
        super().__init__((address, port), _Handler)

    def server_bind(self) -> None:
        if self._dual_stack:
            # "::" should take IPv4 too, whatever net.ipv6.bindv6only says.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Skip HTTPServer.server_bind: it calls socket.getfqdn(), a reverse DNS lookup that
        # can stall for seconds on a host without working DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


@contextlib.contextmanager
def standalone(config: HttpChallengeConfig, answers: Mapping[str, str]) -> Iterator[int]:
    """Serve ``answers`` (token -> key authorization) on the configured address and port.

    Yields the bound port (the configured one, or the one the kernel chose for port 0).
    """
    for token in answers:
        check_token(token)
    where = (f"[{config.listen_address}]:{config.port}" if ":" in config.listen_address
             else f"{config.listen_address}:{config.port}")
    try:
        server = _Responder(config.listen_address, config.port, answers)
    except OSError as exc:
        raise ChallengeError(_bind_error(exc, where, config.port)) from None
    # shutdown() waits up to one poll interval for the loop to notice, and that wait sits
    # between validation and finalization: keep it to a few ms (the wake-ups cost nothing).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.005},
                              name="oeagent-http01", daemon=True)
    thread.start()
    log.debug("http-01 responder listening on %s", where)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _bind_error(exc: OSError, where: str, port: int) -> str:
    head = f"cannot listen on {where} for http-01"
    if exc.errno == errno.EADDRINUSE:
        return (f"{head}: the port is in use (another web server?); stop it, or set "
                "challenge.http.mode = 'webroot' to let that server answer")
    if exc.errno == errno.EACCES:
        return (f"{head}: permission denied (port {port} < 1024 needs root or "
                "CAP_NET_BIND_SERVICE)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{head}: the address is not configured on this host (challenge.http.listen_address)"
    return f"{head}: {exc.strerror or exc}"


@contextlib.contextmanager
def webroot(root: Path, answers: Mapping[str, str]) -> Iterator[list[Path]]:
    """Write one file per token under ``root``/.well-known/acme-challenge and remove them
    (and the directories we created) afterwards. Yields the files written."""
    for token in answers:
        check_token(token)
    if not root.is_dir():
        raise ChallengeError(f"challenge.http.webroot {root} is not a directory")
    challenge_dir = root / ".well-known" / "acme-challenge"
    created_dirs: list[Path] = []
    written: list[Path] = []
    try:
        try:
            for directory in (root / ".well-known", challenge_dir):
                if not directory.exists():
                    directory.mkdir(mode=0o755)
                    # The web server (another user) must read it; mkdir's mode is cut by the umask.
                    os.chmod(directory, 0o755)  # noqa: S103
                    created_dirs.append(directory)
            # A .well-known symlinked elsewhere would take our writes out of the webroot.
            if not challenge_dir.resolve().is_relative_to(root.resolve()):
                raise ChallengeError(f"{challenge_dir} leads outside the webroot {root}; "
                                     "refusing to write there")
            for token, key_authorization in answers.items():
                path = challenge_dir / token
                atomic_write(path, key_authorization.encode("ascii"), PUBLIC_FILE)
                written.append(path)
        except OSError as exc:
            raise ChallengeError(
                f"cannot write http-01 files under {challenge_dir}: {exc.strerror or exc}"
            ) from None
        yield written
    finally:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError):  # not empty: someone else uses it too
                directory.rmdir()
