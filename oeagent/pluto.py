"""Telling a running pluto about changes, through its control socket and ``ipsec whack``.

pluto not running is normal (installed but stopped, or started later): it reads the NSS
database when it starts, so there is nothing to tell it and that is not an error.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from oeagent import proc
from oeagent.errors import PlutoError

log = logging.getLogger(__name__)

# What whack 4.x prints when nobody listens on the socket (exit status 33 in both cases).
_NOT_RUNNING = ("Pluto is not running", "Connection refused", "No such file or directory")


def reread_certs(ctlsocket: Path, timeout: float = 30.0) -> bool:
    """Make pluto reload the certificates of its loaded conns (by nickname).

    True when pluto reloaded them, False when pluto is not running. Raises PlutoError when
    pluto runs but a reload failed (whack exits non-zero: e.g. status 27 "reloading
    leftcert='NICK' failed" when the nickname has no usable certificate and key).
    """
    try:
        if not stat.S_ISSOCK(ctlsocket.stat().st_mode):
            raise PlutoError(f"{ctlsocket} is not a socket; is pluto.ctlsocket right?")
    except FileNotFoundError:
        log.info(
            "pluto is not running (no %s); it reads the certificates when it starts", ctlsocket
        )
        return False
    result = proc.run(
        ["ipsec", "whack", "--ctlsocket", str(ctlsocket), "--rereadcerts"],
        check=False,
        timeout=timeout,
    )
    output = (result.stdout + "\n" + result.stderr).strip()
    if result.returncode == 0:
        log.debug("pluto reread certificates: %s", output)
        return True
    if any(marker in output for marker in _NOT_RUNNING):
        log.info("pluto is not running (%s)", ctlsocket)
        return False
    detail = output.splitlines()[-1] if output else f"exit status {result.returncode}"
    raise PlutoError(f"pluto failed to reload its certificates: {detail}")
