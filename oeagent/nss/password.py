"""The NSS database password: read from libreswan's file, handed to the tools as a file.

libreswan's ``/etc/ipsec.d/nsspassword`` holds ``token:password`` lines (``NSS Certificate
DB:secret``). NSS 3.87's ``-f``/``-k`` happen to understand that form too, but older NSS
releases and passwords that contain a colon do not, so the tools always get a file with the
bare password, written 0600 into a private temporary directory and deleted right after.
A password never appears in argv, the environment or a log line.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oeagent.errors import NssError
from oeagent.secrets import Secret

log = logging.getLogger(__name__)

# The names of the software token that holds pluto's keys (normal and FIPS mode).
INTERNAL_TOKENS = ("NSS Certificate DB", "NSS FIPS 140-2 Certificate DB")


def parse_password_file(text: str) -> str:
    """Return the internal token's password from libreswan-style or bare-password text."""
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    for line in lines:
        token, sep, password = line.partition(":")
        if sep and token.strip() in INTERNAL_TOKENS:
            return password
    if len(lines) == 1:
        # A single line without a known token prefix is a bare password (what certutil -f
        # itself writes and reads); it may legitimately contain a colon.
        return lines[0]
    raise NssError(
        "the NSS password file has no line for the internal token "
        f"(expected '{INTERNAL_TOKENS[0]}:PASSWORD')"
    )


def read_password_file(path: Path) -> Secret:
    try:
        info = path.stat()
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NssError(f"cannot read the NSS password file {path}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise NssError(f"the NSS password file {path} is not a regular file")
    if info.st_mode & 0o077:
        # libreswan itself accepts such a file, so refusing would break working setups.
        log.warning(
            "NSS password file %s is readable by group or others (mode %04o)",
            path,
            info.st_mode & 0o777,
        )
    return Secret(parse_password_file(text).encode("utf-8"), path)


@contextmanager
def private_temp_file(data: bytes, name: str = "data") -> Iterator[Path]:
    """Yield a 0600 file holding ``data`` in a fresh 0700 directory; both removed after."""
    with tempfile.TemporaryDirectory(prefix="oeagent-nss-") as tmp:
        path = Path(tmp) / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield path


@contextmanager
def password_file(secret: Secret | None) -> Iterator[Path]:
    """Yield a 0600 file holding the bare password; an empty file when there is none.

    An empty file (rather than no ``-f``) keeps certutil from prompting on the terminal if
    the database unexpectedly has a password: it fails at once with SEC_ERROR_BAD_PASSWORD.
    """
    with private_temp_file(secret.reveal() if secret is not None else b"", "password") as path:
        yield path
