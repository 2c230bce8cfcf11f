"""What oeagent says when NSS fails in ways NSS itself words badly: a database another
process holds locked, a wrong password, a read-only database. Real certutil, a real sqlite
lock held by another process, a real read-only bind mount."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oeagent.errors import EX_TEMPFAIL, NssError, NssLockedError
from oeagent.nss import NssDatabase
from oeagent.nss.tools import lock_holders

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "certutil"], capture_output=True).returncode != 0,
    reason="needs libnss3-tools",
)

# Holds an sqlite lock on a database file until its stdin closes, as another program using
# the database (an sqlite3 shell, a long certutil) would.
_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0.1, isolation_level=None)
db.execute("BEGIN " + sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def db(tmp_path: Path) -> NssDatabase:
    database = NssDatabase(f"sql:{tmp_path / 'nss'}")
    database.ensure_exists()
    return database


def _hold(path: Path, mode: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), mode],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture
def locked(db: NssDatabase) -> Iterator[subprocess.Popen[str]]:
    holder = _hold(db.directory / "cert9.db", "EXCLUSIVE")
    try:
        yield holder
    finally:
        holder.communicate("")


def test_locked_database_says_locked_and_by_whom(
    db: NssDatabase, locked: subprocess.Popen[str]
) -> None:
    # NSS itself only says SEC_ERROR_BAD_DATABASE here.
    with pytest.raises(NssLockedError) as raised:
        db.list_certificates()
    message = str(raised.value)
    assert f"{db.database} is locked by another process" in message
    assert f"pid {locked.pid} (python" in message and "write lock on cert9.db" in message
    assert "SEC_ERROR_BAD_DATABASE" in message and "run oeagent again" in message
    assert raised.value.exit_code == EX_TEMPFAIL


def test_a_writer_holding_the_key_database_is_named_for_writes(db: NssDatabase) -> None:
    # A pending write transaction (RESERVED lock): reading works, writing fails with
    # SEC_ERROR_PKCS11_GENERAL_ERROR, which is the same lock in NSS's words.
    holder = _hold(db.directory / "key4.db", "IMMEDIATE")
    try:
        assert db.list_certificates() == []
        with pytest.raises(NssLockedError, match=r"locked by another process.*key4\.db"):
            db.run("certutil", ["-A", "-n", "x", "-t", "CT,,", "-a", "-i",
                                "/etc/ssl/certs/ISRG_Root_X1.pem"], "adding a certificate")
        assert lock_holders(db.directory)
    finally:
        holder.communicate("")
    assert lock_holders(db.directory) == []


def test_a_damaged_database_is_not_called_locked(db: NssDatabase) -> None:
    (db.directory / "cert9.db").write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(NssError) as raised:
        db.list_certificates()
    assert not isinstance(raised.value, NssLockedError)
    assert "locked" not in str(raised.value)


def test_wrong_password_is_named_and_never_printed(tmp_path: Path) -> None:
    right = tmp_path / "nsspassword"
    right.write_text("NSS Certificate DB:correct horse:battery\n")
    right.chmod(0o600)
    NssDatabase(f"sql:{tmp_path / 'nss'}", right).ensure_exists()
    wrong = tmp_path / "wrong"
    wrong.write_text("NSS Certificate DB:Tr0ub4dor&3\n")
    wrong.chmod(0o600)
    with pytest.raises(NssError) as raised:
        NssDatabase(f"sql:{tmp_path / 'nss'}", wrong).keys()
    message = str(raised.value)
    assert "wrong password for the NSS database" in message and "nss.password_file" in message
    assert "correct horse" not in message and "Tr0ub4dor" not in message
    with pytest.raises(NssError, match=r"has a password: set nss.password_file"):
        NssDatabase(f"sql:{tmp_path / 'nss'}").keys()
