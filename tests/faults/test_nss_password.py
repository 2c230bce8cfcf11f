"""An NSS database with a password (libreswan's ``nsspassword``): enroll and renew into it
with the real certutil and pk12util, and look for the password everywhere it must not be --
stdout, stderr, the --json document, the --debug log and tracebacks, ``status``, every file
oeagent writes, and the argument lists and environments of every process on the machine
while oeagent runs (sampled from /proc) -- on success and with a wrong password."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

import pytest

from lab import Lab
from tests.faults.harness import (
    Host,
    before,
    check_secrets,
    converges,
    fault,
    run,
    survived,
    write_config,
)
from tests.integration.publish_support import fresh_name

pytestmark = pytest.mark.lab

# A colon (libreswan's file is "token:password"), spaces and shell metacharacters.
PASSWORD = "nss:pw $(id) 'q' \"d\" 7Yh3-Lk9"
WRONG = "wrong:pw Zx8-Qw2 $HOME"
_TOOLS = ("certutil", "pk12util")


class ProcWatch:
    """Sample every process's argv and environment while oeagent runs: none may hold a
    secret, and the NSS tools it starts on databases under ``root`` are recorded to check how
    the password reaches them (other test sessions may run certutil on this machine too).
    """

    def __init__(self, root: Path, *secrets: str) -> None:
        self.root = str(root)  # tools are ours when they work on a database under it
        self.secrets = [s.encode() for s in secrets]
        self.leaks: list[str] = []
        self.tools: dict[int, list[str]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            self.samples += 1
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or entry.name == me:
                    continue
                try:
                    argv = Path(entry.path, "cmdline").read_bytes()
                    environ = Path(entry.path, "environ").read_bytes()
                except OSError:
                    continue  # gone already
                args = [a.decode("utf-8", "replace") for a in argv.split(b"\0") if a]
                if any(secret in argv or secret in environ for secret in self.secrets):
                    self.leaks.append(f"pid {entry.name}: {args[:3]}")
                if args and Path(args[0]).name in _TOOLS and any(self.root in a for a in args):
                    self.tools.setdefault(int(entry.name), args)


def _password_host(lab: Lab, root: Path) -> Host:
    """A host whose NSS database is created with a password by its first enroll."""
    pwfile = root / "nsspassword"
    pwfile.write_text(f"NSS Certificate DB:{PASSWORD}\n")
    pwfile.chmod(0o600)
    name = fresh_name(lab, "oe.test")
    host = Host(lab, root, name,
                write_config(lab, root, name, {"nss.password_file": str(pwfile)}))
    for command in (("enroll",), ("policy",)):
        result = run(host, *command)
        assert result.code == 0, str(result)
        check_secrets(host, [result.out, result.err])
    return host


def _check_tool_arguments(tools: dict[int, list[str]]) -> None:
    """The password reaches certutil as ``-f FILE`` and pk12util as ``-k FILE`` (the PKCS#12
    password as ``-w FILE``): never ``-W``/``-K`` with the value itself."""
    names = {Path(argv[0]).name for argv in tools.values()}
    assert names == set(_TOOLS), f"the sampling saw too little: {names}"
    for argv in tools.values():
        flags = ("-k", "-w") if Path(argv[0]).name == "pk12util" else ("-f",)
        if Path(argv[0]).name == "pk12util":
            assert "-W" not in argv and "-K" not in argv, argv
        for flag in flags:
            if flag in argv:
                value = argv[argv.index(flag) + 1]
                assert value.startswith("/") and Path(value).name != value, argv
                assert not Path(value).exists(), f"{value} outlived {argv[0]}"
        assert "-f" in argv or "-k" in argv, f"no password file given: {argv}"


def _files_without(root: Path, secret: str, *, allowed: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != allowed:
            assert secret.encode() not in path.read_bytes(), f"the password is in {path}"


@fault("NSS database with a password (libreswan's nsspassword: token:password)",
       "enroll, renew --force, status",
       "works with the real certutil/pk12util; the password is in no output, --json, log, "
       "traceback, status, state file, nor in any process's argv or environment (sampled from "
       "/proc): certutil gets -f FILE, pk12util -k FILE (the PKCS#12's own password -w FILE)")
def test_nss_password_never_leaks(lab: Lab, tmp_path: Path) -> None:
    with ProcWatch(tmp_path, PASSWORD) as watch:
        host = _password_host(lab, tmp_path)
        try:
            prior = before(host)
            renewed = run(host, "renew", "--force")
            status = run(host, "status")
        finally:
            host.cleanup()
    survived(host, renewed, prior, exit_codes={0}, serial_may_change=True, dns_changed=True)
    assert renewed.doc["deploy"]["outcome"] == "replaced", renewed.doc
    assert status.code in (0, 1) and status.doc.get("nss", {}).get("verified"), str(status)
    check_secrets(host, [status.out, status.err])
    assert watch.leaks == [], watch.leaks
    _check_tool_arguments(watch.tools)
    assert host.config.nss.password_file is not None
    _files_without(tmp_path, PASSWORD, allowed=host.config.nss.password_file)


@fault("wrong NSS database password (nss.password_file no longer matches)", "renew --force",
       "refused before ordering (no certificate issued): exit 1 saying the password in "
       "nss.password_file is wrong, neither password printed (also with --debug); the working "
       "certificate stays; rerun with the right password deploys")
def test_wrong_nss_password(lab: Lab, tmp_path: Path) -> None:
    host = _password_host(lab, tmp_path)
    pwfile = host.config.nss.password_file
    assert pwfile is not None
    prior = before(host)
    right = pwfile.read_text()
    pwfile.write_text(f"NSS Certificate DB:{WRONG}\n")
    try:
        with ProcWatch(tmp_path, PASSWORD, WRONG) as watch:
            result = run(host, "renew", "--force")
    finally:
        pwfile.write_text(right)
    survived(host, result, prior, exit_codes={1}, error="wrong password for the NSS database")
    assert "nss.password_file" in result.error
    assert WRONG not in result.out + result.err and "Zx8-Qw2" not in result.out + result.err
    assert watch.leaks == [], watch.leaks
    # Checked before the order: the CA issued nothing that would wait for a deploy.
    assert host.serial() == prior.serial
    converges(host, "enroll", prior=prior)
    _files_without(tmp_path, PASSWORD, allowed=pwfile)
    _files_without(tmp_path, WRONG, allowed=pwfile)
