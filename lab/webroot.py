"""A tiny static web server on Pebble's http-01 port, for oeagent's webroot mode."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


class WebrootServer(http.server.ThreadingHTTPServer):
    """Records the paths it was asked for in ``requests`` (Pebble asks 3 times per token)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path) -> None:
        self.requests: list[str] = []
        handler = functools.partial(_QuietHandler, directory=str(directory))
        super().__init__(address, handler)


@contextlib.contextmanager
def serve_directory(directory: Path, port: int, host: str = "127.0.0.1") -> Iterator[WebrootServer]:
    directory.mkdir(parents=True, exist_ok=True)
    server = WebrootServer((host, port), directory)
    thread = threading.Thread(target=server.serve_forever, name="lab-webroot", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
