"""nginx as the lab's HTTPS server for the well-known OE document.

It serves a webroot over HTTPS on a loopback port with whatever certificate the test hands it
— normally the one oeagent obtained from the lab's Pebble, so clients validate it against
Pebble's root exactly as they would validate a real host's Let's Encrypt certificate.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from lab.procs import LabError

WELL_KNOWN = "/.well-known/oe-ipsec"


def write_config(nginx_dir: Path, logs: Path, port: int, cert: Path, key: Path,
                 webroot: Path, address: str = "127.0.0.1", redirect_to: str | None = None) -> Path:
    """``redirect_to``: answer the well-known path with a 302 there (a fault for clients)."""
    nginx_dir.mkdir(parents=True, exist_ok=True)
    tmp = nginx_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    conf = nginx_dir / "nginx.conf"
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        "daemon off;\n"
        "master_process on;\n"
        # Test directories are root-only (0700); workers must read the webroot and the key.
        "user root;\n"
        "worker_processes 1;\n"
        f"pid {nginx_dir / 'nginx.pid'};\n"
        f"error_log {logs / 'nginx-error.log'} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    access_log {logs / 'nginx-access.log'};\n"
        f"{temp_paths}"
        "    default_type application/octet-stream;\n"
        "    server_tokens off;\n"
        "    server {\n"
        f"        listen {address}:{port} ssl;\n"
        "        server_name _;\n"
        f"        ssl_certificate {cert};\n"
        f"        ssl_certificate_key {key};\n"
        f"        root {webroot};\n"
        + (f"        location = {WELL_KNOWN} {{ return 302 {redirect_to}; }}\n" if redirect_to
           else f"        location = {WELL_KNOWN} {{ default_type application/json; }}\n")
        +
        "    }\n"
        "}\n"
    )
    check = subprocess.run(
        ["nginx", "-t", "-q", "-c", str(conf)], capture_output=True, text=True, timeout=10,
        check=False,
    )
    if check.returncode != 0:
        raise LabError(f"nginx -t rejected {conf}:\n{check.stderr}")
    return conf


def argv(conf: Path) -> list[str]:
    return ["nginx", "-c", str(conf)]


def listening(port: int, address: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False
