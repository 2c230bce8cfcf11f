"""``oeagent serve``: a small HTTPS responder for ``/.well-known/oe-ipsec``.

For hosts without a web server. It answers that one path with the document the
``wellknown`` backend (mode ``serve``) wrote into the state directory, read on every request
so a publish takes effect at once, and presents the enrolled certificate, reloaded when a
renewal makes another certificate current. Everything else is 404; only GET and HEAD.
The TLS handshake runs in the connection's own thread with a timeout, so one slow client
cannot stall the others.
"""

from __future__ import annotations

import http.server
import logging
import signal
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any

from oeagent import certstore
from oeagent.advertisement import MAX_DOCUMENT_BYTES, WELL_KNOWN_PATH
from oeagent.config import Config
from oeagent.publish.base import PublishError
from oeagent.publish.wellknown import serve_file
from oeagent.report import Reporter
from oeagent.state import StateDir

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: WellKnownServer
    server_version = "oeagent"
    sys_version = ""

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        body = self.server.document() if self.path == WELL_KNOWN_PATH else None
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class WellKnownServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: StateDir) -> None:
        self.state = state
        self.document_path = serve_file(state.root)
        self._lock = threading.Lock()
        self._serial: str | None = None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.reload_certificate()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind asks socket.getfqdn() for a reverse name of the
        # listening address, through the system resolver: up to its whole timeout (10 s in a
        # network namespace whose resolver is unreachable) before the port is open. The name
        # is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def reload_certificate(self) -> None:
        """Load the current certificate and key if they changed since the last load."""
        current = certstore.load_current(self.state)
        if current is None:
            raise PublishError("oeagent serve needs an enrolled certificate: run oeagent enroll")
        with self._lock:
            if current.serial_hex == self._serial:
                return
            fullchain = self.state.cert_dir(current.serial_hex) / "fullchain.pem"
            self.context.load_cert_chain(fullchain, self.state.cert_key_path)
            self._serial = current.serial_hex
        log.info("serving with certificate %s", current.serial_hex)

    def document(self) -> bytes | None:
        try:
            data = self.document_path.read_bytes()
        except OSError:
            return None
        return data if len(data) <= MAX_DOCUMENT_BYTES else None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's thread (ThreadingMixIn): handshake here, not in accept().
        try:
            self.reload_certificate()
        except (PublishError, OSError, ssl.SSLError) as exc:
            log.warning("keeping the previous certificate: %s", exc)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.info("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            tls.close()


def serve(config: Config, reporter: Reporter, listen: str | None = None,
          port: int | None = None, ready: threading.Event | None = None) -> dict[str, object]:
    """Serve until SIGTERM or SIGINT."""
    wk = config.publish.wellknown
    state = StateDir(config.state_dir)
    address = (listen or wk.listen_address, port if port is not None else wk.port)
    try:
        server = WellKnownServer(address, state)
    except OSError as exc:
        raise PublishError(f"cannot listen on {address[0]} port {address[1]}: "
                           f"{exc.strerror or exc}") from None
    if threading.current_thread() is threading.main_thread():
        def stop(signum: int, frame: object) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
    reporter.step("serve", f"serving https://{config.host.names[0]}{WELL_KNOWN_PATH} on "
                  f"{address[0]} port {server.server_address[1]} from {server.document_path}",
                  port=server.server_address[1])
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return {"served": str(Path(server.document_path))}
