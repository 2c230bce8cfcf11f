"""Secrets (TSIG keys, EAB keys) read from their own files, never from the TOML itself.

A relative file name is looked up first in ``$CREDENTIALS_DIRECTORY`` (systemd's
LoadCredential=), then next to the config file. A file that group or others can read is
refused: a secret that leaked to other local users is no longer a secret.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_BIND_SECRET = re.compile(r'secret\s+"([A-Za-z0-9+/=\s]+)"\s*;')


class Secret:
    """A secret value whose repr and str never show it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: bytes, source: Path) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<hidden>, source={str(self.source)!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def locate(name: str, base_dir: Path) -> Path:
    if os.path.isabs(name):
        return Path(name)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / name).exists():
        return Path(creds) / name
    return base_dir / name


MAX_SECRET_FILE_BYTES = 64 * 1024


def read_secret(name: str, base_dir: Path) -> Secret:
    """Read a base64 secret (plain, or a BIND ``key { secret "..."; }`` file).

    Raises ValueError with a message fit for the operator.
    """
    path = locate(name, base_dir)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValueError(f"secret file not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"secret file {path} is not a regular file")
    if info.st_size > MAX_SECRET_FILE_BYTES:  # a key file is a few hundred bytes
        raise ValueError(f"secret file {path} is {info.st_size} bytes: not a key file "
                         f"(at most {MAX_SECRET_FILE_BYTES})")
    if info.st_mode & 0o077:
        raise ValueError(
            f"secret file {path} is readable by group or others (mode {info.st_mode & 0o777:04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read secret file {path}: {exc}") from None
    match = _BIND_SECRET.search(text)
    encoded = match.group(1) if match else text
    encoded = "".join(encoded.split())
    if not encoded:
        raise ValueError(f"secret file {path} is empty")
    value = _decode_base64(encoded)
    if value is None:
        # Never echo the content: it is the secret.
        raise ValueError(f"secret file {path} does not hold a base64 secret") from None
    if len(value) < 16:
        raise ValueError(f"secret in {path} is shorter than 128 bits")
    return Secret(value, path)


def _decode_base64(encoded: str) -> bytes | None:
    """Standard base64 (TSIG keys) or unpadded base64url (EAB keys as CAs hand them out)."""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    if not _BASE64URL.fullmatch(encoded):
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
