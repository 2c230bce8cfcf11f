"""Local faults: the NSS database locked or read-only during a renewal, the state and ipsec
directories full or read-only while writing, SIGKILL at each step of renew, publish and
policy, and two runs of each command at once (the clock: test_clock_faults)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tests.faults.harness import (
    Host,
    Run,
    before,
    check_files,
    converges,
    fault,
    kill_at,
    run,
    survived,
)

pytestmark = pytest.mark.lab


@fault("NSS database locked by another process (sqlite exclusive lock)", "renew --force",
       "the new certificate is issued and kept in the state directory; deploying fails, exit "
       "75 saying the database is locked and by which process (NSS says only "
       "SEC_ERROR_BAD_DATABASE); the working certificate stays; a later run deploys it")
def test_nss_locked_during_renew(host: Host) -> None:
    prior = before(host)
    db = sqlite3.connect(host.nss_dir / "cert9.db", timeout=0.1, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        result = run(host, "renew", "--force", timeout=180)
    finally:
        db.close()
    survived(host, result, prior, exit_codes={75}, error="locked by another process")
    converges(host, "enroll", prior=prior)


@fault("NSS database read-only (read-only bind mount)", "renew --force",
       "exit 1 naming the read-only database and saying nothing was changed (not 'restored'); "
       "the working certificate stays; rerun deploys")
def test_nss_read_only_during_renew(host: Host) -> None:
    prior = before(host)
    host.mount(host.nss_dir, "ro", fstype="bind")
    try:
        result = run(host, "renew", "--force")
    finally:
        host.unmount(host.nss_dir)
    survived(host, result, prior, exit_codes={1}, error="read-only")
    assert "nothing was changed" in result.error and "restored" not in result.error
    converges(host, "enroll", prior=prior)


def _fill(directory: Path) -> None:
    """Fill the tmpfs mounted at ``directory`` to the last byte."""
    with open(directory / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    try:
        with open(directory / "filler2", "wb") as handle:
            while True:
                handle.write(b"\0")
                handle.flush()
    except OSError:
        pass


@fault("state directory full (a 2 MiB tmpfs, filled)", "enroll --force",
       "exit 1 saying the disk is full; no half-written file; the working certificate "
       "stays; rerun with space converges")
def test_state_dir_full(host: Host) -> None:
    prior = before(host)
    host.mount(host.state, "size=2m,mode=0700")
    try:
        _fill(host.state)
        result = run(host, "enroll", "--force")
        survived(host, result, prior, exit_codes={1}, error="No space left")
    finally:
        host.unmount(host.state)
    converges(host, "enroll", prior=prior)


@fault("state directory read-only while writing", "enroll --force",
       "exit 1 naming the read-only file system; nothing changed; rerun converges")
def test_state_dir_read_only(host: Host) -> None:
    prior = before(host)
    host.mount(host.state, "ro", fstype="bind")
    try:
        result = run(host, "enroll", "--force")
    finally:
        host.unmount(host.state)
    survived(host, result, prior, exit_codes={1, 75}, error="read-only")
    converges(host, "enroll", prior=prior)


def _policy_change(host: Host) -> Path:
    return host.reconfigure({"policy.clear": ["10.99.0.0/16"]})


def _policy_files(host: Host) -> dict[str, bytes]:
    return {str(p.relative_to(host.ipsec_dir)): p.read_bytes()
            for p in sorted(host.ipsec_dir.rglob("oeagent*")) if p.is_file()}


@fault("ipsec directory full (a small tmpfs, filled)", "policy",
       "exit 1 saying the disk is full; the installed policy files are the old ones, whole; "
       "rerun converges")
def test_ipsec_dir_full(host: Host) -> None:
    prior = before(host)
    old = _policy_files(host)
    _policy_change(host)
    host.mount(host.ipsec_dir, "size=1m,mode=0755")
    try:
        _fill(host.ipsec_dir)
        result = run(host, "policy")
        assert _policy_files(host) == old
    finally:
        host.unmount(host.ipsec_dir)
    survived(host, result, prior, exit_codes={1}, error="No space left")
    assert converges(host, "policy", prior=prior)
    assert _policy_files(host) != old


@fault("ipsec directory read-only", "policy",
       "exit 1 naming the read-only file system; old policy files untouched; rerun converges")
def test_ipsec_dir_read_only(host: Host) -> None:
    prior = before(host)
    old = _policy_files(host)
    _policy_change(host)
    host.mount(host.ipsec_dir, "ro", fstype="bind")
    try:
        result = run(host, "policy")
    finally:
        host.unmount(host.ipsec_dir)
    assert _policy_files(host) == old
    survived(host, result, prior, exit_codes={1}, error="read-only")
    converges(host, "policy", prior=prior)


KILLS = [
    ("renew", "--force", "[order]"), ("renew", "--force", "[store]"),
    ("renew", "--force", "[nss] certificate"), ("renew", "--force", "[verify]"),
    ("publish", "", "[advertise]"), ("publish", "", "[plan]"), ("publish", "", "[apply]"),
    ("policy", "", "[check]"), ("policy", "", "[install]"),
]


@fault("SIGKILL at each step of renew, publish and policy (9 points)", "renew, publish, policy",
       "the next run recovers (NSS journal, CAS retry, atomic files) and converges",
       cases=9)
@pytest.mark.parametrize(("command", "flag", "marker"), KILLS)
def test_sigkill_at_each_step(host: Host, command: str, flag: str, marker: str) -> None:
    prior = before(host)
    if command == "publish":
        host.reconfigure({"publish.mode": "testing"})
    if command == "policy":
        _policy_change(host)
    killed = kill_at(host, marker, command, *[f for f in (flag,) if f])
    survived(host, killed, prior, exit_codes={-9}, serial_may_change=True, dns_changed=True)
    converges(host, command, *[f for f in (flag,) if f and command != "renew"], prior=prior)


@fault("temp files a killed run left in the state and ipsec directories", "publish, policy",
       "removed at the start of the next run (under the lock), reported as a recover step",
       cases=2)
def test_stale_temp_files_are_removed_by_the_next_run(host: Host) -> None:
    for command, directory in (("publish", host.state), ("policy", host.ipsec_dir / "policies")):
        stale = directory / ".oeagent-clear.k3j2x9.tmp"
        stale.write_text("half")
        result = run(host, command)
        assert result.code == 0, str(result)
        assert not stale.exists(), command
        assert any(step["step"] == "recover" for step in result.doc["steps"]), result.doc
        check_files(host)


@fault("two runs at once of renew, publish and policy", "renew --force, publish, policy (twice)",
       "the lock serializes them: the second waits, then runs or exits 75 naming the holder",
       cases=3)
@pytest.mark.parametrize("command", [("renew", "--force"), ("publish",), ("policy",)])
def test_two_runs_at_once(host: Host, command: tuple[str, ...]) -> None:
    prior = before(host)
    if command == ("publish",):
        host.reconfigure({"publish.mode": "testing"})
    if command == ("policy",):
        _policy_change(host)
    results: list[Run | None] = [None, None]

    def go(i: int) -> None:
        results[i] = run(host, *command)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        assert result is not None
        survived(host, result, prior, exit_codes={0, 75}, error="lock",
                 serial_may_change=True, dns_changed=True)
    assert any(r is not None and r.code == 0 for r in results)
    converges(host, command[0], prior=prior)
