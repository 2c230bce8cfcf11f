"""certutil and pk12util: run them on one database, and say what their failures mean.

The database password reaches the tools as a file (``-f`` for certutil, ``-k`` for
pk12util; see ``oeagent.nss.password``), never as an argument. NSS's own words for three
common failures do not say what is wrong, so ``failure()`` translates them:

- a database another process holds locked is SEC_ERROR_BAD_DATABASE when certutil opens it
  and SEC_ERROR_PKCS11_GENERAL_ERROR when it writes (sqlite gives up after NSS's one-second
  busy wait); the lock is confirmed, and its holder named, from ``/proc/locks`` (sqlite takes
  POSIX locks on cert9.db and key4.db);
- a wrong or missing password is SEC_ERROR_BAD_PASSWORD;
- a read-only database is SEC_ERROR_READ_ONLY (said with where it comes from).

``Started`` runs a read-only question alongside others: each is a process of its own, and a
database has any number of readers.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from oeagent import proc
from oeagent.errors import NssError, NssLockedError
from oeagent.nss.password import password_file
from oeagent.secrets import Secret

DATABASE_FILES = ("cert9.db", "key4.db")
_LOCK_SYMPTOMS = ("SEC_ERROR_BAD_DATABASE", "SEC_ERROR_PKCS11_GENERAL_ERROR")

T = TypeVar("T")


class Started(Generic[T]):
    """A read-only tool call running in a thread of its own while the caller does more.

    Only for questions (listings, ``certutil -V``): nothing that changes the database. The
    caller must ``wait()`` for it on every path (``result()`` does), so no tool still runs
    when the caller goes on to change the database.
    """

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="oeagent-nss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> T:
        """Its return value, or what it raised, raised here."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when there is no error


def run_tool(
    tool: str,
    args: Sequence[str | Path],
    database: str,
    password: Secret | None,
    what: str,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run certutil/pk12util on ``database``; with ``check``, raise ``failure(what, ...)``."""
    pw_flag = "-f" if tool == "certutil" else "-k"
    with password_file(password) as pw:
        argv = [tool, *map(str, args), "-d", database, pw_flag, str(pw)]
        result = proc.run(argv, check=False)
    if check and result.returncode != 0:
        raise failure(what, result, database, has_password=password is not None)
    return result


def reason(result: subprocess.CompletedProcess[str]) -> str:
    """certutil's reason: the last meaningful line it printed (never our own input)."""
    lines = [
        line.strip()
        for line in (result.stderr + "\n" + result.stdout).splitlines()
        if line.strip() and not line.startswith("certutil: Checking token")
    ]
    return lines[-1] if lines else f"exit status {result.returncode}"


def failure(
    what: str, result: subprocess.CompletedProcess[str], database: str, *, has_password: bool
) -> NssError:
    """The error for a failed tool run: what is wrong and what to do, where NSS does not say."""
    output = result.stdout + result.stderr
    directory = Path(database.removeprefix("sql:"))
    if "SEC_ERROR_BAD_PASSWORD" in output:
        fix = (
            "the password in nss.password_file is not this database's"
            if has_password
            else "the database has a password: set nss.password_file to libreswan's "
            "nsspassword file"
        )
        return NssError(
            f"{what} failed: wrong password for the NSS database {database} ({fix}; NSS says "
            "SEC_ERROR_BAD_PASSWORD)"
        )
    if "SEC_ERROR_READ_ONLY" in output:
        where = "its file system is mounted read-only" if _read_only_fs(directory) else (
            "its files are not writable"
        )
        return NssError(
            f"{what} failed: the NSS database {database} is read-only ({where}; NSS says "
            "SEC_ERROR_READ_ONLY); make it writable and run oeagent again"
        )
    symptom = next((code for code in _LOCK_SYMPTOMS if code in output), None)
    if symptom is not None:
        holders = lock_holders(directory)
        if holders:
            return NssLockedError(
                f"{what} failed: the NSS database {database} is locked by another process "
                f"({'; '.join(holders)}), which NSS reports only as {symptom}; let that "
                "process finish (or stop it) and run oeagent again"
            )
    return NssError(f"{what} failed: {reason(result)}")


def lock_holders(directory: Path) -> list[str]:
    """Who holds a lock on the database's sqlite files, from ``/proc/locks``."""
    files: dict[tuple[int, int, int], str] = {}
    for name in DATABASE_FILES:
        try:
            info = (directory / name).stat()
        except OSError:
            continue
        files[(os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)] = name
    try:
        lines = Path("/proc/locks").read_text("ascii", "replace").splitlines()
    except OSError:
        return []
    held: dict[tuple[str, str], str] = {}
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 16298 fe:00:2149600 1073741824 1073742335"; a process
        # waiting for a lock shows as "1: -> POSIX ...", which is not a holder.
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        kind, pid, ident = fields[3], fields[4], fields[5].split(":")
        try:
            key = (int(ident[0], 16), int(ident[1], 16), int(ident[2]))
        except (IndexError, ValueError):
            continue
        if key in files:
            previous = held.get((pid, files[key]))
            held[(pid, files[key])] = "WRITE" if "WRITE" in (kind, previous) else kind
    return [
        f"{_process(pid)} holds a {kind.lower()} lock on {name}"
        for (pid, name), kind in sorted(held.items())
    ]


def _process(pid: str) -> str:
    if pid == "-1":  # an open file description lock has no owning pid
        return "a process"
    try:
        command = Path(f"/proc/{pid}/comm").read_text("utf-8", "replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({command})"


def _read_only_fs(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False
