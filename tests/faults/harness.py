"""The fault matrix's shared harness: a working host, one way to run oeagent, and ONE place
that asserts what every fault must leave behind.

``survived(host, run, ...)`` checks, after a fault:

- the run ended with a clear one-line error and the expected non-zero exit (or exit 0 where
  oeagent should recover by itself), never an internal error (70) or a traceback;
- no secret (the TSIG secret, the EAB HMAC key, any private key) in stdout, stderr or the --json document,
  although every fault run is made with ``--debug``;
- the working certificate is still the only one under the nickname, with its key, and
  ``certutil -V`` accepts it;
- no half-written file: no temp file left in the state or ipsec directory, every JSON state
  file parses, every key and secret file is 0600 and every state directory 0700, the NSS
  database files are not readable by group or others;
- no half-replaced DNS record: oeagent's records at the host's names are exactly the set
  before the fault (or, with ``dns_changed``, the set a converged run publishes).

``converges(host, ...)`` then runs the command again without the fault and requires exit 0
and a verified advertisement.

Every fault test registers itself in ``MATRIX`` with ``@fault(...)``; the README's table is
generated from it (tests/faults/test_matrix.py keeps them equal).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lab import Lab
from oeagent import config as config_module
from oeagent.nss import parse_password_file
from tests.integration.publish_support import fresh_name, our_records

REPO = Path(__file__).resolve().parents[2]
# The venv's bin first, so install-units finds the oeagent executable.
ENV = {**os.environ, "PYTHONPATH": str(REPO),
       "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Fault:
    fault: str
    command: str
    expected: str
    test: str
    cases: int = 1


MATRIX: list[Fault] = []


def fault(what: str, command: str, expected: str, cases: int = 1) -> Callable[[F], F]:
    """Register a test in the fault matrix (README "Reliability and security"); ``cases``:
    how many faults its parameters inject."""

    def register(func: F) -> F:
        module = func.__module__.rsplit(".", 1)[-1]
        entry = Fault(what, command, expected, f"faults/{module}.py::{func.__name__}", cases)
        # pytest may import a test module under a second name: register each test once.
        if entry not in MATRIX:
            MATRIX.append(entry)
        return func

    return register


@dataclass
class Run:
    argv: list[str]
    code: int
    doc: dict[str, Any]
    out: str
    err: str
    seconds: float = 0.0

    @property
    def error(self) -> str:
        return str(self.doc.get("error") or "")

    def __str__(self) -> str:
        return f"{self.argv[-3:]} exit {self.code}\nstdout: {self.out[-3000:]}\nstderr: {self.err[-3000:]}"


@dataclass
class Host:
    lab: Lab
    root: Path
    name: str
    config_path: Path
    mounts: list[Path] = field(default_factory=list)

    @property
    def config(self) -> config_module.Config:
        return config_module.load(self.config_path)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def ipsec_dir(self) -> Path:
        return self.config.pluto.ipsec_dir

    @property
    def nss_dir(self) -> Path:
        return Path(self.config.nss.database.removeprefix("sql:"))

    def reconfigure(self, overrides: dict[str, Any]) -> Path:
        return write_config(self.lab, self.root, self.name, overrides)

    def serial(self) -> str:
        return str(json.loads((self.state / "current.json").read_text())["serial"])

    def secrets(self) -> list[str]:
        text = self.lab.info.tsig_key_file.read_text()
        tsig = text.split('secret "', 1)[1].split('"', 1)[0]
        out = [tsig, *eab_key_forms(self.config)]
        if self.config.nss.password_file is not None:  # the NSS database's password
            out.append(parse_password_file(self.config.nss.password_file.read_text()))
        for pem in self.state.rglob("*.pem"):
            body = pem.read_text()
            if "PRIVATE KEY" in body:
                out += [line for line in body.splitlines() if len(line) > 40][:2]
        return out

    def records(self) -> dict[str, dict[str, int]]:
        return our_records(self.lab, self.name)

    def mount(self, directory: Path, options: str, fstype: str = "tmpfs") -> None:
        """Mount over ``directory`` keeping its content (tmpfs: copied in; ro: a bind mount)."""
        if fstype == "bind":
            subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
            subprocess.run(["mount", "-o", f"remount,{options},bind", str(directory)], check=True)
        else:
            saved = directory.with_name(directory.name + ".saved")
            shutil.copytree(directory, saved, symlinks=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                           check=True)
            shutil.copytree(saved, directory, symlinks=True, dirs_exist_ok=True)
            os.chmod(directory, saved.stat().st_mode & 0o7777)
            shutil.rmtree(saved)
        self.mounts.append(directory)

    def unmount(self, directory: Path) -> None:
        """Take the mount away again, keeping what was written into a tmpfs."""
        if directory not in self.mounts:
            return
        self.mounts.remove(directory)
        kept = directory.with_name(directory.name + ".kept")
        is_tmpfs = "tmpfs" in subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(directory)],
                                             capture_output=True, text=True).stdout
        if is_tmpfs:
            for filler in directory.glob("filler*"):
                filler.unlink()
            shutil.copytree(directory, kept, symlinks=True)
        subprocess.run(["umount", str(directory)], check=True)
        if is_tmpfs:
            shutil.rmtree(directory)
            kept.rename(directory)

    def cleanup(self) -> None:
        for directory in reversed(list(self.mounts)):
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)
        self.mounts.clear()


def eab_key_forms(config: config_module.Config) -> list[str]:
    """The EAB HMAC key as it could show up: base64url (as CAs hand it out), base64, hex."""
    secret = config.acme.eab_hmac_key
    if secret is None:
        return []
    raw = secret.reveal()
    return [base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(raw).decode().rstrip("="), raw.hex()]


def write_config(lab: Lab, root: Path, name: str, overrides: dict[str, Any] | None = None) -> Path:
    base: dict[str, Any] = {
        "host.names": [name],
        "publish.backends": ["rfc2136"],
        "publish.verify_timeout": 10,
        "publish.dns.timeout": 3,
        "lock_timeout": 2,
        "renewal.retry_initial": 1,
        "renewal.retry_max": 2,
        "acme.network_timeout": 5,
        "acme.order_timeout": 30,
    }
    return lab.write_config(root / "oeagent.toml", {**base, **(overrides or {})}, root=root)


def new_host(lab: Lab, root: Path, zone: str = "oe.test", publish: bool = True) -> Host:
    name = fresh_name(lab, zone)
    overrides = None if publish else {"publish.backends": []}
    host = Host(lab, root, name, write_config(lab, root, name, overrides))
    for command in (("enroll",), ("policy",)):
        result = run(host, *command)
        assert result.code == 0, str(result)
    return host


def run(host: Host, *args: str, timeout: float = 120, config: Path | None = None,
        env: dict[str, str] | None = None) -> Run:
    """Run oeagent ``args`` with ``--json --debug``; ``env`` replaces ``ENV`` (a faked clock)."""
    argv = [sys.executable, "-m", "oeagent", "--config", str(config or host.config_path),
            "--json", "--debug", *args]
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env=ENV if env is None else env)
    if os.environ.get("FAULTS_TRACE"):
        print(f"{time.monotonic() - began:6.2f}s exit {proc.returncode} {' '.join(args)}: "
              f"{json.loads(proc.stdout).get('error') if proc.stdout.startswith('{') else ''}")
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {"unparsed": proc.stdout}
    return Run(argv, proc.returncode, doc, proc.stdout, proc.stderr, time.monotonic() - began)


def start(host: Host, *args: str, json_output: bool = False) -> subprocess.Popen[str]:
    """Start oeagent in the background, printing its steps as they happen (text mode)."""
    argv = [sys.executable, "-m", "oeagent", "--config", str(host.config_path), "--debug",
            *(["--json"] if json_output else []), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)


def run_until(host: Host, marker: str, act: Callable[[], None], *args: str) -> Run:
    """Run oeagent ``args``; when a line of its output starts with ``marker``, call ``act``
    (kill a daemon, fill a disk...) and let the run finish."""
    proc = start(host, *args)
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(marker):
            act()
            break
    out, err = proc.communicate(timeout=120)
    seen.append(out)
    text = "".join(seen)
    assert any(line.startswith(marker) for line in seen[:-1] + text.splitlines()), text
    last_error = [line.split(": error: ", 1)[1] for line in err.splitlines()
                  if line.startswith("oeagent ") and ": error: " in line]
    return Run(proc.args, proc.returncode,  # type: ignore[arg-type]
               {"error": last_error[-1] if last_error else ""}, text, err)


def kill_at(host: Host, marker: str, *args: str) -> Run:
    """Run oeagent ``args`` and SIGKILL it as soon as it prints a line starting ``marker``."""
    proc = start(host, *args)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(marker):
            proc.send_signal(signal.SIGKILL)
            break
    out, err = proc.communicate(timeout=60)
    text = "".join(seen) + out
    assert proc.returncode == -signal.SIGKILL, f"{marker!r} never printed:\n{text}\n{err}"
    return Run(proc.args, proc.returncode, {}, text, err)  # type: ignore[arg-type]


@dataclass
class Before:
    serial: str
    records: dict[str, dict[str, int]]


def before(host: Host) -> Before:
    return Before(host.serial(), host.records())


def nss_certs(host: Host) -> list[str]:
    cfg = host.config
    proc = subprocess.run(["certutil", "-L", "-d", cfg.nss.database, "-n", cfg.nss.nickname, "-a"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        return []
    from cryptography import x509

    return [format(c.serial_number, "x") for c in x509.load_pem_x509_certificates(proc.stdout)]


def nss_keys(host: Host) -> list[str]:
    pwfile = host.config.nss.password_file
    password = ["-f", str(pwfile)] if pwfile is not None else []
    proc = subprocess.run(["certutil", "-K", "-d", host.config.nss.database, *password],
                          capture_output=True, text=True, input="", check=False)
    return [line for line in proc.stdout.splitlines() if line.startswith("<")]


def nss_verifies(host: Host) -> bool:
    cfg = host.config
    return subprocess.run(["certutil", "-V", "-u", "V", "-d", cfg.nss.database, "-n",
                           cfg.nss.nickname], capture_output=True, check=False).returncode == 0


def check_files(host: Host, temp_files_allowed: bool = False) -> None:
    """No temp file left (right after a SIGKILL one may be: the next run removes it), every
    JSON parses, private modes on keys, secrets and state dirs."""
    for directory in (host.state, host.ipsec_dir):
        if not directory.exists() or temp_files_allowed:
            continue
        leftovers = [p for p in directory.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"temp files left behind: {leftovers}"
    for path in host.state.rglob("*.json"):
        json.loads(path.read_text())
    check_modes(host)


def check_modes(host: Host) -> None:
    problems = []
    for path in [host.state, *host.state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if path.is_dir() and mode != 0o700:
            problems.append(f"{path} is a directory with mode {mode:o}, not 700")
        if path.is_file() and path.suffix == ".pem" and "PRIVATE KEY" in path.read_text():
            if mode != 0o600:
                problems.append(f"{path} holds a private key with mode {mode:o}, not 600")
        if path.is_file() and path.parent.name in ("nss-work", "policy-backup") and mode & 0o077:
            problems.append(f"{path} is readable by others ({mode:o})")
        if path.name == "lock" and mode & 0o022:
            problems.append(f"{path} is writable by others ({mode:o})")
    for name in ("cert9.db", "key4.db", "pkcs11.txt"):
        db = host.nss_dir / name
        if db.exists() and stat.S_IMODE(db.stat().st_mode) & 0o077:
            problems.append(f"{db} is accessible to group/others ({db.stat().st_mode:o})")
    assert not problems, "\n".join(problems)


def check_secrets(host: Host, texts: Iterable[str]) -> None:
    blob = "\n".join(texts)
    for secret in host.secrets():
        assert secret not in blob, "a secret was printed"
    assert "PRIVATE KEY" not in blob


def survived(host: Host, result: Run, prior: Before, *, exit_codes: Iterable[int],
             error: str | None = None, serial_may_change: bool = False,
             dns_changed: bool = False) -> None:
    """The invariants every fault must leave behind (see the module docstring)."""
    codes = set(exit_codes)
    assert result.code in codes, str(result)
    assert result.code != 70 and "internal error" not in result.error, str(result)
    if result.code not in (0, -signal.SIGKILL):
        assert result.error, str(result)
        if error is not None:
            assert error.lower() in result.error.lower(), str(result)
        # With --debug the traceback of an OeagentError is printed on purpose; its message
        # alone is the user's line, and it fits on one.
        assert "\n" not in result.error.strip() or result.code == 78, str(result)
    check_secrets(host, [result.out, result.err])
    certs = nss_certs(host)
    assert len(certs) == 1, f"NSS holds {certs} under the nickname"
    assert len(nss_keys(host)) == 1
    assert nss_verifies(host)
    if not serial_may_change:
        assert certs == [prior.serial], f"the working certificate was replaced: {certs}"
    check_files(host, temp_files_allowed=result.code == -signal.SIGKILL)
    if not dns_changed:
        assert host.records() == prior.records, "oeagent's DNS records changed under the fault"


def converges(host: Host, *args: str, prior: Before | None = None) -> Run:
    """Run ``args`` (default: enroll) again without the fault: exit 0, one verified
    certificate, the current one deployed, DNS as a converged publish leaves it."""
    result = run(host, *(args or ("enroll",)))
    assert result.code == 0, str(result)
    check_secrets(host, [result.out, result.err])
    assert nss_certs(host) == [host.serial()] and nss_verifies(host)
    check_files(host)
    deadline = time.monotonic() + 15
    while True:
        verify = run(host, "publish", "--verify")
        if verify.code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert verify.code == 0, str(verify)
    if prior is not None:
        # A converged DNS state is either what was there (nothing needed to change) or one
        # complete new set, never a mixture: the TXT id agrees with the pins in TLSA.
        records = host.records()
        assert records["tlsa500"].keys() == records["tlsa4500"].keys()
    return result
