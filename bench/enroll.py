"""Enrollment benchmark: ``oeagent enroll`` versus libreswan's ``ipsec letsencrypt`` path.

    .venv/bin/python bench/enroll.py [--pairs N] [--smoke] [--output FILE] [--lab DIR]

A  ``python -m oeagent enroll --force`` (existing account, http-01 standalone, NSS swap);
B  ``certbot certonly --standalone --force-renewal`` (certbot from PyPI in its own venv),
   then ``openssl pkcs12 -export`` and ``pk12util -i`` into a fresh NSS database;
F  the floor: the same ACME exchanges made in-process with the ``acme`` library directly,
   same account key, http-01 answered by an in-process responder, polling every 2 ms.

A and B alternate (A B A B ...); each pair also runs the floor. All against one lab Pebble
on loopback (started here, or ``--lab DIR`` for one already up). Wall time is
``time.perf_counter``; CPU time is user+sys of the child processes (``os.wait4``, which
includes the children they waited for: certutil, pk12util), or of this process for F.

``--profile FILE``: after the pairs, one more (untimed) ``oeagent enroll --force`` under
pyinstrument (wall-clock call tree: imports, ACME round trips and the certutil runs as the
frames that wait for them), its text report in FILE. pyinstrument rather than py-spy here:
py-spy's 1,000-samples-a-second ptrace sampling slowed this half-second, import-bound
process to 16 s and bent the shares. pyinstrument is in the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from acme import challenges, crypto_util, messages  # noqa: E402
from acme import client as acme_client  # noqa: E402
from acme import errors as acme_errors  # noqa: E402
from josepy.jwa import ES256  # noqa: E402
from josepy.jwk import JWKEC  # noqa: E402

from bench.common import cpu_model, emit  # noqa: E402
from lab import Lab, LabInfo  # noqa: E402
from oeagent import keys  # noqa: E402
from oeagent.state import StateDir  # noqa: E402

NAME = "server.oe.test"
DEFAULT_CERTBOT_VENV = REPO / ".bench" / "certbot-venv"
# Variables that would send loopback traffic through a proxy or change whom a client trusts.
SCRUBBED = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
_WAITING = (messages.STATUS_PENDING, messages.STATUS_PROCESSING)


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0

    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["no_proxy"] = env["NO_PROXY"] = "*"
    env.update(extra or {})
    return env


def run_timed(argv: Sequence[str], env: dict[str, str], log_file: Path,
              cwd: Path | None = None) -> Sample:
    """Run ``argv`` to completion; wall time and the child's user+sys CPU (with its children)."""
    with log_file.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        raise BenchError(f"{argv[0]} exited {proc.returncode}:\n" + "\n".join(tail))
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def add(a: Sample, b: Sample) -> Sample:
    return Sample(a.wall + b.wall, a.cpu + b.cpu)


# ---- A: oeagent --------------------------------------------------------------------------

class Oeagent:
    def __init__(self, lab: Lab, work: Path) -> None:
        self.dir = work / "oeagent"
        self.config = lab.write_config(self.dir / "oeagent.toml", root=self.dir)
        self.log = work / "oeagent.log"
        # Byte-compiled, as an installed package is (and as certbot's venv is: pip compiles
        # what it installs): with PYTHONDONTWRITEBYTECODE in the environment and no
        # __pycache__ in a checkout, every run would compile oeagent's ~50 modules again
        # (~25-45 ms here). The warm-up writes the cache, outside the source tree.
        self.env = clean_env({"PYTHONPATH": str(REPO),
                              "PYTHONPYCACHEPREFIX": str(work / "pycache")})
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def run(self, *extra: str) -> Sample:
        argv = [sys.executable, "-m", "oeagent", "--config", str(self.config), "enroll", *extra]
        return run_timed(argv, self.env, self.log)

    def warm_up(self) -> None:
        self.run()  # registers the account, issues and installs the first certificate

    def run_forced(self) -> Sample:
        return self.run("--force")

    def profile(self, output: Path) -> None:
        # The venv's own pyinstrument (`pip install -e '.[bench]'`), else one on PATH.
        here = Path(sys.executable).parent / "pyinstrument"
        argv = [str(here) if here.exists() else "pyinstrument", "-o",
                str(output), "-m", "oeagent", "--config", str(self.config), "enroll",
                "--force"]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pyinstrument failed: {done.stderr[-1000:]}")


# ---- B: certbot + openssl + pk12util -----------------------------------------------------

def ensure_certbot(venv: Path) -> Path:
    certbot = venv / "bin" / "certbot"
    if certbot.exists():
        return certbot
    log(f"creating {venv} and installing certbot from PyPI")
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The system interpreter: a venv made from this venv's python would still be independent,
    # but the system one keeps the two installations clearly apart.
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "certbot"], check=True)
    return certbot


class Certbot:
    def __init__(self, info: LabInfo, certbot: Path, work: Path) -> None:
        self.dir = work / "certbot"
        self.dir.mkdir(parents=True)
        self.certbot = certbot
        self.log = work / "certbot.log"
        self.env = clean_env({"REQUESTS_CA_BUNDLE": str(info.https_ca_pem)})
        self.tool_env = clean_env()
        self.argv = [
            str(certbot), "certonly", "--standalone",
            "--server", info.acme_directory,
            "--http-01-port", str(info.http_port), "--http-01-address", "127.0.0.1",
            "--config-dir", str(self.dir / "config"), "--work-dir", str(self.dir / "work"),
            "--logs-dir", str(self.dir / "logs"),
            "--agree-tos", "--register-unsafely-without-email", "--non-interactive",
            "--force-renewal", "-d", NAME,
        ]
        self.live = self.dir / "config" / "live" / NAME
        self.runs = 0

    def warm_up(self) -> None:
        run_timed(self.argv, self.env, self.log)  # registers the account, first certificate

    def run(self) -> Sample:
        """certbot, then the import the script does; a fresh NSS database each time (untimed)."""
        self.runs += 1
        nss = self.dir / f"nss-{self.runs}"
        nss.mkdir()
        subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"],
                       check=True, capture_output=True, env=self.tool_env)
        p12 = self.dir / f"cert-{self.runs}.p12"
        total = run_timed(self.argv, self.env, self.log)
        total = add(total, run_timed(
            ["openssl", "pkcs12", "-export", "-inkey", str(self.live / "privkey.pem"),
             "-in", str(self.live / "fullchain.pem"), "-name", NAME, "-out", str(p12),
             "-passout", "pass:"], self.tool_env, self.log))
        total = add(total, run_timed(
            ["pk12util", "-i", str(p12), "-d", f"sql:{nss}", "-W", "", "-K", ""],
            self.tool_env, self.log))
        shutil.rmtree(nss)
        p12.unlink()
        return total

    def version(self) -> str:
        out = subprocess.run([str(self.certbot), "--version"], capture_output=True, text=True,
                             check=False, env=self.env)
        return (out.stdout or out.stderr).strip().removeprefix("certbot ")


# ---- F: the floor ------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Responder

    def do_GET(self) -> None:
        body = self.server.answers.get(self.path.rsplit("/", 1)[-1])
        payload = body.encode() if body is not None else b""
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Responder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.answers: dict[str, str] = {}
        super().__init__(("127.0.0.1", port), _Handler)


@contextlib.contextmanager
def responder(port: int) -> Iterator[_Responder]:
    server = _Responder(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Floor:
    """The ACME exchanges oeagent makes, with nothing else: no process, no NSS, no sleeps."""

    def __init__(self, info: LabInfo, oeagent: Oeagent) -> None:
        self.info = info
        state = StateDir(oeagent.dir / "state")
        account_dir = state.account_dir(info.acme_directory)
        key = keys.load_key_pem((account_dir / "key.pem").read_bytes(), "account key")
        self.key = JWKEC(key=key)
        self.account_url = str(json.loads((account_dir / "account.json").read_text())["url"])
        cert_key_pem = (state.root / "keys" / "current.pem").read_bytes()
        self.csr = crypto_util.make_csr(cert_key_pem, domains=[NAME])

    def run(self, server: _Responder) -> Sample:
        try:
            return self._run(server)
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            # Pebble rejects 5 % of nonces; the library retries only once.
            raise BenchError(f"floor: {type(exc).__name__}: {exc}") from exc

    def _run(self, server: _Responder) -> Sample:
        cpu0, started = time.process_time(), time.perf_counter()
        net = acme_client.ClientNetwork(self.key, alg=ES256, verify_ssl=True,
                                        user_agent="oeagent-bench-floor")
        # ClientNetwork passes verify_ssl on every request; requests takes a CA file there too.
        net.verify_ssl = cast(bool, str(self.info.https_ca_pem))
        net.session.trust_env = False
        directory = acme_client.ClientV2.get_directory(self.info.acme_directory, net)
        client = acme_client.ClientV2(directory, net)
        # oeagent asks the CA for the key's account (onlyReturnExisting) on every run: so do we.
        client.query_registration(messages.RegistrationResource(
            uri=self.account_url, body=messages.Registration()))
        orderr = client.new_order(self.csr)
        authzr = orderr.authorizations[0]
        if authzr.body.status != messages.STATUS_PENDING:
            # Not a comparable run (oeagent would skip a reused, valid authorization too).
            raise BenchError(f"floor: the new order's authorization is {authzr.body.status}")
        challb = next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.chall.response_and_validation(self.key)
        server.answers[challb.chall.encode("token")] = validation
        client.answer_challenge(challb, response)
        while authzr.body.status in _WAITING:
            time.sleep(0.002)
            authzr, _ = client.poll(authzr)
        if authzr.body.status != messages.STATUS_VALID:
            raise BenchError(f"floor: authorization {authzr.body.status}")
        order = client.begin_finalization(orderr).body
        while order.status != messages.STATUS_VALID:
            if order.status == messages.STATUS_INVALID:
                raise BenchError("floor: order invalid")
            time.sleep(0.002)
            reply = net.post(orderr.uri, None, new_nonce_url=directory["newNonce"])
            order = messages.Order.from_json(reply.json())
        pem = net.post(order.certificate, None, new_nonce_url=directory["newNonce"]).text
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
        net.session.close()
        if "BEGIN CERTIFICATE" not in pem:
            raise BenchError("floor: no certificate downloaded")
        return Sample(wall, cpu)


# ---- the run -----------------------------------------------------------------------------

def attempt(series: Series, run: Any, retries: int = 2) -> None:
    """One measured run; a failed one (Pebble rejects 5 % of nonces, two in a row sometimes
    fail a client) is counted and run again, never averaged in."""
    for _ in range(retries + 1):
        try:
            series.samples.append(run())
            return
        except BenchError as exc:
            series.failures += 1
            log(f"{series.label}: run failed, retrying: {exc}")
    raise BenchError(f"{series.label}: {retries + 1} runs in a row failed")


def warm_up(run: Any, retries: int = 2) -> None:
    """The untimed first run, retried like a measured one: Pebble rejects 5 % of nonces, and
    certbot does not retry a badNonce on its own (a smoke run in the test suite failed so)."""
    for left in range(retries, -1, -1):
        try:
            run()
            return
        except BenchError as exc:
            if not left:
                raise
            log(f"warm-up failed, retrying: {exc}")


def deb_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "?"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(a: Series, b: Series, f: Series, *, command: str, certbot_version: str,
           when: dt.datetime, pairs: int, load: tuple[float, float, float]) -> str:
    ratio_wall = b.wall() / a.wall()
    ratio_cpu = b.cpu() / a.cpu()
    pair_ratios = [y.wall / x.wall for x, y in zip(a.samples, b.samples, strict=False)]
    target = a.wall() < b.wall() / 4
    pairs_met = sum(x.wall < y.wall / 4 for x, y in zip(a.samples, b.samples, strict=False))
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True,
                             check=False).stdout.split()[1]
    lines = [
        f"Enrollment benchmark, {pairs} pairs (A B alternating), medians; "
        f"floor runs: {len(f.samples)}.",
        "",
        "| path | wall (median) | CPU user+sys (median) | wall min-max |",
        "|---|---:|---:|---:|",
    ]
    for s in (a, b, f):
        walls = [x.wall for x in s.samples]
        lines.append(f"| {s.label} | {ms(s.wall())} | {ms(s.cpu())} | "
                     f"{ms(min(walls))}-{ms(max(walls))} |")
    lines += [
        "",
        f"- certbot path / oeagent: **{ratio_wall:.2f}x** wall (median of per-pair ratios "
        f"{statistics.median(pair_ratios):.2f}x), {ratio_cpu:.2f}x CPU",
        f"- target (oeagent under ¼ of the certbot path's wall time): "
        f"{'**met**' if target else '**missed**'} "
        f"(oeagent is {a.wall() / b.wall():.1%} of it; under ¼ in {pairs_met} of "
        f"{len(pair_ratios)} pairs)",
        f"- oeagent / floor: {a.wall() / f.wall():.1f}x the floor's wall time "
        f"(oeagent spends {ms(a.wall() - f.wall())} beyond the ACME exchanges themselves)",
        f"- failed runs retried: oeagent {a.failures}, certbot {b.failures}, "
        f"floor {f.failures}",
        "",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPUs (`nproc`: {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}, {platform.system()} {platform.release()}; load average "
        f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after (a shared machine)",
        f"- date: {when:%Y-%m-%d %H:%M} UTC",
        f"- versions: certbot {certbot_version}, acme {importlib.metadata.version('acme')}, "
        f"Pebble {deb_version('pebble').split('+')[0]} (Debian {deb_version('pebble')}), "
        f"NSS {deb_version('libnss3')}, OpenSSL {openssl}, Python {platform.python_version()}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=5, help="A/B pairs (default 5)")
    parser.add_argument("--smoke", action="store_true", help="1 pair, to check the script works")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    parser.add_argument("--certbot-venv", type=Path, default=DEFAULT_CERTBOT_VENV)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--profile", type=Path,
                        help="one more, untimed oeagent run under pyinstrument; its report "
                             "here")
    args = parser.parse_args(argv)
    pairs = 1 if args.smoke else args.pairs
    if pairs < 1:
        parser.error("--pairs must be at least 1")
    command = shlex.join(["bench/enroll.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    load = os.getloadavg()

    certbot = ensure_certbot(args.certbot_venv)
    work = Path(tempfile.mkdtemp(prefix="oeagent-bench-enroll-"))
    lab = Lab(args.lab if args.lab else work / "lab")
    failed = True
    try:
        info = lab.info if args.lab else lab.up()
        a = Oeagent(lab, work)
        b = Certbot(info, certbot, work)
        log(f"warm-up (accounts, first certificates); logs in {work}")
        warm_up(a.warm_up)
        warm_up(b.warm_up)
        floor = Floor(info, a)
        sa = Series("A: `oeagent enroll --force`")
        sb = Series("B: `certbot certonly --standalone` + `openssl pkcs12` + `pk12util -i`")
        sf = Series("floor: the same ACME exchanges in-process, no waiting")
        with responder(info.http_port) as server:  # warm the floor's code paths (not counted)
            attempt(Series("floor warm-up"), lambda: floor.run(server))
        for n in range(pairs):
            attempt(sa, a.run_forced)
            attempt(sb, b.run)
            with responder(info.http_port) as server:
                for _ in range(1 if args.smoke else 3):
                    attempt(sf, lambda: floor.run(server))
            log(f"pair {n + 1}/{pairs}: oeagent {ms(sa.samples[-1].wall)}, "
                f"certbot path {ms(sb.samples[-1].wall)}, floor {ms(sf.samples[-1].wall)}")
        if args.profile:
            a.profile(args.profile)
            log(f"profile (untimed, pyinstrument) in {args.profile}")
        table = report(sa, sb, sf, command=command, certbot_version=b.version(), when=when,
                       pairs=pairs, load=load)
        failed = False
    finally:
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        if args.keep or failed:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
