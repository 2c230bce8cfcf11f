"""The state directory: what oeagent owns on disk, where each piece lives, and the run lock.

Layout (all private: directories 0700, files 0600)::

    STATE/lock                          fcntl lock; holds the pid of the run that has it
    STATE/accounts/<ca-id>/key.pem      ACME account key (one account per CA directory URL)
    STATE/accounts/<ca-id>/account.json registration: directory, account URL, contact
    STATE/keys/current.pem              the certificate key (reused across renewals)
    STATE/certs/<serial>/cert.pem       every issued certificate, with chain.pem, fullchain.pem
    STATE/current.json                  which issued certificate is the current one
    STATE/deployed.json                 what was deployed where (NSS database, nickname, serial)
    STATE/nss-work/                     journal and backup of an NSS swap in progress
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oeagent.errors import LockError, StateError
from oeagent.fsio import PRIVATE_FILE, atomic_write, atomic_write_text, ensure_private_dir


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------------------
    @property
    def accounts_root(self) -> Path:
        """Holds one ``account_dir`` per CA."""
        return self.root / "accounts"

    def account_dir(self, directory_url: str) -> Path:
        # Staging and production (or two CAs) have separate accounts and keys.
        ca_id = hashlib.sha256(directory_url.encode()).hexdigest()[:16]
        return self.accounts_root / ca_id

    @property
    def cert_key_path(self) -> Path:
        return self.root / "keys" / "current.pem"

    def cert_dir(self, serial_hex: str) -> Path:
        return self.root / "certs" / serial_hex

    @property
    def current_path(self) -> Path:
        return self.root / "current.json"

    @property
    def deployed_path(self) -> Path:
        return self.root / "deployed.json"

    @property
    def removed_path(self) -> Path:
        """``unenroll --remove-nss`` took the identity out of NSS (``oeagent.removal``)."""
        return self.root / "removed.json"

    @property
    def nss_work_dir(self) -> Path:
        return self.root / "nss-work"

    # -- creation and I/O -----------------------------------------------------------------
    def ensure(self) -> None:
        """Create the state directory and its subdirectories with private modes."""
        try:
            ensure_private_dir(self.root)
            for sub in ("accounts", "keys", "certs", "nss-work"):
                ensure_private_dir(self.root / sub)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.root}: {exc.strerror}") from None

    def write_bytes(self, path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
        try:
            ensure_private_dir(path.parent)
            atomic_write(path, data, mode)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None

    def read_bytes(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None

    def write_json(self, path: Path, document: dict[str, Any], *,
                   inline_below: int | None = None) -> None:
        """Indented, keys sorted; with ``inline_below``, values nested that deep are written
        on one line each (e.g. 2: one line per peer in ``peers.json``): readable, and
        written by json's C encoder, which ``indent`` turns off -- a 1,000-peer cache took
        ~10 % of a discovery run's interpreter time to write indented."""
        text = (_json_lines(document, 0, inline_below) if inline_below is not None
                else json.dumps(document, indent=2, sort_keys=True))
        try:
            ensure_private_dir(path.parent)
            atomic_write_text(path, text + "\n")
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None

    def read_json(self, path: Path) -> dict[str, Any] | None:
        raw = self.read_bytes(path)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise StateError(
                f"{path} is not valid JSON ({exc}); move it aside to start over"
            ) from None
        if not isinstance(document, dict):
            raise StateError(f"{path} does not hold a JSON object")
        return document

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files a killed run left behind (call with the lock held).

        ``atomic_write`` names them ``.<name>.<random>.tmp``; they never replaced a real
        file, so removing them loses nothing.
        """
        removed = []
        for path in self.root.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        return removed

    # -- the run lock ---------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold the state lock; wait up to ``timeout`` seconds for another run to finish."""
        self.ensure()
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as exc:
            raise StateError(f"cannot open the lock file {path}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            delay = 0.05
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StateError(f"cannot lock {path}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise LockError(
                        f"another oeagent run{holder} holds the lock on {self.root}; "
                        f"gave up after waiting {timeout:g} s (lock_timeout)"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the flock


def read_time(value: object) -> dt.datetime | None:
    """A time as the state files hold it (ISO 8601 with its UTC offset), or None for
    anything else: a time without a zone cannot be compared with now (a TypeError far from
    the file), so each reader decides what damage means for it."""
    try:
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def _read_holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        return f" (pid {pid})"
    return ""


def _json_lines(value: Any, depth: int, inline_below: int) -> str:
    if not isinstance(value, dict) or not value or depth >= inline_below:
        return json.dumps(value, sort_keys=True)
    pad = "  " * (depth + 1)
    items = ",\n".join(f"{pad}{json.dumps(key)}: {_json_lines(item, depth + 1, inline_below)}"
                       for key, item in sorted(value.items()))
    return f"{{\n{items}\n{'  ' * depth}}}"
