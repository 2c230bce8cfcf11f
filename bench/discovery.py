"""Discovery benchmark: ``oeagent discover --from-file`` versus a ``dig +dnssec`` loop.

    .venv/bin/python bench/discovery.py [--peers 1000] [--baseline-peers N] [--smoke]
                                        [--output FILE] [--lab DIR]

Peers (created here with batched, TSIG-signed RFC 2136 updates built by the publisher's own
``oeagent.publish.records``), a quarter of each kind:

  signed     ``oe.test`` (DNSSEC-signed): TXT ``mode=enforce``, TLSA on 500 and 4500, IPSECKEY
  none       ``oe.test``: the TXT ``mode=none`` that ``unenroll`` publishes
  document   ``plain.test`` (unsigned): A record, and a well-known document served over HTTPS
             by an nginx started here (one document per name, a wildcard certificate from a
             throw-away CA that discovery is told to trust)
  nothing    ``plain.test``: A record only; the HTTPS fallback gets 404

A  ``python -m oeagent discover --json --from-file PEERS`` (a process, interpreter start-up
   included) with ``discovery.concurrency`` 1, 8, 32 and 128, a fresh state directory each;
B  the baseline an administrator would script: a loop running one ``dig +dnssec`` process per
   record per peer against the same validating resolver, for exactly the records oeagent asks
   for: A and AAAA (the conns' addresses) and the ``_oe`` TXT; both TLSA and the IPSECKEY only
   when the TXT is a signed advertisement that is not ``mode=none``; and, when the TXT answer
   has no AD bit, one ``curl`` for the well-known document (at the A address).

Cold cache: the lab's unbound caps every TTL at 5 s (``cache-max-ttl``), so each run starts
after 6 s of quiet; oeagent's own cache is a fresh state directory. B runs on a sample
(``--baseline-peers``, every k-th peer, so all four kinds) and is compared in peers per second.

``--profile FILE``: after the timed rounds, one more (untimed) oeagent run at 8 in flight under
``py-spy record --gil`` (only samples of the thread holding the GIL: where the Python CPU goes;
OpenSSL's handshake work runs without the GIL and is not in it), collapsed stacks in FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rcode
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import emit, provenance  # noqa: E402
from lab import Lab  # noqa: E402
from oeagent import keys  # noqa: E402
from oeagent.advertisement import WELL_KNOWN_PATH, Advertisement  # noqa: E402
from oeagent.publish import records  # noqa: E402

KINDS = ("signed", "none", "document", "nothing")
EXPECTED = {"signed": "authenticated", "none": "none", "document": "authenticated",
            "nothing": "none"}
SIGNED_ZONE = "oe.test"
PLAIN_ZONE = "plain.test"
BATCH = 40  # peers per RFC 2136 update message
COLD_WAIT = 6.0  # unbound's cache-max-ttl is 5 s in the lab
TTL = 300


def log(message: str) -> None:
    sys.stderr.write(f"[bench-discovery] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_peers(count: int, tag: str) -> list[Peer]:
    peers = []
    for i in range(count):
        kind = KINDS[i % 4]
        zone = SIGNED_ZONE if kind in ("signed", "none") else PLAIN_ZONE
        peers.append(Peer(f"b{tag}-{i:05d}.{zone}", kind))
    return peers


def publish(lab: Lab, peers: list[Peer], webroot: Path) -> None:
    """Every peer's records, in batches of BATCH peers per update; documents in the webroot."""
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    by_zone: dict[str, list[Peer]] = {SIGNED_ZONE: [], PLAIN_ZONE: []}
    for p in peers:
        by_zone[p.name.split(".", 1)[1]].append(p)
    for zone, members in by_zone.items():
        for start in range(0, len(members), BATCH):
            update = lab.update_message(zone)
            for p in members[start:start + BATCH]:
                owner = records.name(p.name)
                update.replace(owner, TTL, "A", "127.0.0.1")
                if p.kind == "nothing":
                    continue
                key = ec.generate_private_key(ec.SECP256R1())
                mode = "none" if p.kind == "none" else "enforce"
                pins = () if mode == "none" else (keys.spki_sha256(key),)
                ad = Advertisement(p.name, "ecdsa", pins, mode, 3600)
                if p.kind == "document":
                    doc = webroot / p.name / WELL_KNOWN_PATH.lstrip("/")
                    doc.parent.mkdir(parents=True, exist_ok=True)
                    doc.write_bytes(ad.document_bytes(expires))
                    continue
                public = () if mode == "none" else (key.public_key(),)
                for rrset in records.dns_rrsets(ad, public, TTL, reverse=False).values():
                    update.replace(rrset.name, rrset)
            reply = lab.send_update(update)
            if reply.rcode() != dns.rcode.NOERROR:
                raise SystemExit(f"update refused: {dns.rcode.to_text(reply.rcode())}")
            if zone == SIGNED_ZONE:
                wait_served(lab, members[start:start + BATCH][-1])


def wait_served(lab: Lab, peer: Peer, timeout: float = 60) -> None:
    """Until BIND serves the batch's last record signed. Its inline signer can leave the last
    of several quick updates unsigned ("receive_secure_serial: unchanged") until the next
    change, so after a second without it, nudge it with one more update."""
    owner = str(records.txt_owner(peer.name))
    deadline = time.monotonic() + timeout
    nudge = time.monotonic() + 1
    while not lab.dig(owner, "TXT").answer:
        if time.monotonic() > deadline:
            raise SystemExit(f"BIND does not serve {owner} signed in time")
        if time.monotonic() > nudge:
            update = lab.update_message(SIGNED_ZONE)
            update.replace(f"_bench-nudge.{SIGNED_ZONE}.", 60, "TXT", f'"{time.time()}"')
            lab.send_update(update)
            nudge = time.monotonic() + 1
        time.sleep(0.05)


def wait_signed(lab: Lab, peers: list[Peer], timeout: float = 120) -> None:
    """Until the resolver sees the last signed peers' records with AD (inline signing lags)."""
    last = [p for p in peers if p.kind in ("signed", "none")][-8:]
    deadline = time.monotonic() + timeout
    while True:
        missing = [p for p in last
                   if not lab.dig(str(records.txt_owner(p.name)), "TXT", resolver=True).answer]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"records not visible in time: {[p.name for p in missing]}")
        time.sleep(0.5)


class WildcardCA:
    def __init__(self, directory: Path, zone: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench discovery root")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                           False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{zone}")]))
                .issuer_name(ca_name).public_key(leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{zone}")]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.root = directory / "root.pem"
        self.root.write_bytes(ca.public_bytes(pem))
        self.chain = directory / "chain.pem"
        self.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
        self.key = directory / "key.pem"
        self.key.write_bytes(keys.key_to_pem(leaf_key))
        self.key.chmod(0o600)


@contextlib.contextmanager
def nginx(directory: Path, port: int, chain: Path, key: Path, webroot: Path) -> Iterator[None]:
    """nginx serving ``webroot/$host/`` over HTTPS on 127.0.0.1:port (one document per name)."""
    tmp = directory / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    temp_paths = "".join(f"    {k}_temp_path {tmp / k};\n"
                         for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(
        "daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\n"
        f"pid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\nhttp {\n    access_log off;\n"
        f"{temp_paths}    server_tokens off;\n    server {{\n"
        f"        listen 127.0.0.1:{port} ssl;\n        server_name _;\n"
        f"        ssl_certificate {chain};\n        ssl_certificate_key {key};\n"
        f"        root {webroot}/$host;\n"
        "        location = /.well-known/oe-ipsec { default_type application/json; }\n"
        "    }\n}\n")
    proc = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(directory / 'error.log').read_text()}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def daemon_cpu(lab: Lab) -> dict[str, float]:
    """CPU seconds so far of the lab's unbound and BIND."""
    _, daemons = lab._load()
    return {name: cpu_seconds(d.pid) for name, d in daemons.items() if name in ("unbound", "named")}


@dataclass
class Run:
    label: str
    peers: int
    wall: float
    cpu: float = 0.0  # the client's own (oeagent, or dig+curl processes)
    resolver_cpu: float = 0.0  # unbound + BIND during the run

    @property
    def rate(self) -> float:
        return self.peers / self.wall


A = "A: `oeagent discover`"
A_BEFORE = "A before: `oeagent discover` of `--before`"


def run_oeagent(lab: Lab, work: Path, peer_file: Path, peers: list[Peer], concurrency: int,
                https_port: int, ca_root: Path, index: int, profile: Path | None = None,
                source: Path = REPO) -> Run:
    """One ``oeagent discover`` process; ``source`` holds the oeagent package it runs."""
    root = work / f"oeagent-{index}"
    config = lab.write_config(root / "oeagent.toml", {
        "discovery.resolver": "127.0.0.1", "discovery.resolver_port": lab.info.unbound_port,
        "discovery.concurrency": concurrency, "discovery.https_port": https_port,
        "discovery.https_ca_bundle": str(ca_root)}, root=root)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "oeagent", "--config", str(config), "discover", "--json",
            "--from-file", str(peer_file)]
    if profile is not None:  # py-spy from PyPI: collapsed stacks of the GIL holder
        argv = ["py-spy", "record", "--gil", "--rate", "250", "--format", "raw",
                "--output", str(profile), "--", *argv]
    before, children = daemon_cpu(lab), os.times()
    start = time.perf_counter()
    # cwd too: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH.
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900,
                          check=False, cwd=source)
    wall = time.perf_counter() - start
    after, children_after = daemon_cpu(lab), os.times()
    if proc.returncode != 0:
        raise SystemExit(f"oeagent discover failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    status = {r["peer"]: r["status"] for r in rows if "peer" in r}
    wrong = [(p.name, p.kind, status.get(p.name)) for p in peers
             if status.get(p.name) != EXPECTED[p.kind]]
    if wrong:
        raise SystemExit(f"oeagent classified {len(wrong)} peers wrongly, e.g. {wrong[:5]}")
    cpu = (children_after.children_user + children_after.children_system
           - children.children_user - children.children_system)
    label = A if source == REPO else A_BEFORE
    return Run(f"{label}, {concurrency} in flight", len(peers), wall, cpu,
               sum(after.values()) - sum(before.values()))


def run_baseline(lab: Lab, peers: list[Peer], https_port: int, ca_root: Path) -> Run:
    """One dig per record oeagent asks for, then curl when the TXT is not signed: a shell loop's
    work. Like oeagent, it asks for the keys only after a signed TXT that is not mode=none."""
    resolver = ["@127.0.0.1", "-p", str(lab.info.unbound_port)]

    def dig(owner: str, rdtype: str) -> str:
        return subprocess.run(["dig", *resolver, "+dnssec", "+tries=1", "+time=3", owner, rdtype],
                              capture_output=True, text=True, check=False, timeout=30).stdout

    before, children = daemon_cpu(lab), os.times()
    start = time.perf_counter()
    got: Counter[str] = Counter()
    for p in peers:
        a_answer, _, txt = dig(p.name, "A"), dig(p.name, "AAAA"), dig(f"_oe.{p.name}", "TXT")
        signed = " ad" in txt.split("flags:", 1)[-1].split(";", 1)[0] and "v=OE1" in txt
        if signed:
            got["signed-txt"] += 1
            if "mode=none" not in txt:
                for owner, rdtype in ((f"_500._udp.{p.name}", "TLSA"),
                                      (f"_4500._udp.{p.name}", "TLSA"), (p.name, "IPSECKEY")):
                    got[f"signed-{rdtype}"] += " ad" in dig(owner, rdtype).split("flags:", 1)[-1]
            continue
        address = [line.split()[-1] for line in a_answer.splitlines()
                   if line and not line.startswith(";") and "\tA\t" in line]
        curl = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
             "--cacert", str(ca_root), "--resolve",
             f"{p.name}:{https_port}:{address[0] if address else '127.0.0.1'}",
             f"https://{p.name}:{https_port}{WELL_KNOWN_PATH}"],
            capture_output=True, text=True, check=False, timeout=30).stdout
        got[f"https-{curl}"] += 1
    wall = time.perf_counter() - start
    after, children_after = daemon_cpu(lab), os.times()
    cpu = (children_after.children_user + children_after.children_system
           - children.children_user - children.children_system)
    expected_docs = sum(p.kind == "document" for p in peers)
    expected_keys = sum(p.kind == "signed" for p in peers)
    if got["https-200"] != expected_docs or got["signed-IPSECKEY"] != expected_keys:
        raise SystemExit(f"baseline saw {dict(got)}, expected {expected_docs} documents and "
                         f"{expected_keys} signed IPSECKEYs")
    return Run("B: one `dig +dnssec` per record oeagent asks (3; 6 for a signed "
               "advertisement), + `curl` when unsigned",
               len(peers), wall, cpu, sum(after.values()) - sum(before.values()))


def tool_version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def per_peer(series: list[Run], attribute: str) -> str:
    return f"{statistics.median(getattr(r, attribute) / r.peers for r in series) * 1000:.1f} ms"


def report(baselines: list[Run], runs: dict[tuple[str, int], list[Run]], *, peers: int,
           command: str, when: dt.datetime, load: tuple[float, float, float]) -> str:
    base_rate = statistics.median(r.rate for r in baselines)
    lines = [
        f"Discovery benchmark, {peers} peers (a quarter each: signed advertisement, signed "
        f"`mode=none`, unsigned + well-known document, unsigned + nothing), cold caches; "
        f"baseline on {baselines[0].peers} of them; medians of {len(baselines)} rounds.", "",
        "| run | peers/s (median) | wall (median) | client CPU per peer | unbound+BIND CPU "
        "per peer | vs baseline |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {baselines[0].label} | {base_rate:.1f} | "
        f"{statistics.median(r.wall for r in baselines):.2f} s "
        f"({baselines[0].peers} peers) | {per_peer(baselines, 'cpu')} | "
        f"{per_peer(baselines, 'resolver_cpu')} | 1.0x |",
    ]
    best = 0.0
    for (label, _), series in runs.items():
        rate = statistics.median(r.rate for r in series)
        if label == A:
            best = max(best, rate)
        lines.append(f"| {series[0].label} | {rate:.1f} | "
                     f"{statistics.median(r.wall for r in series):.2f} s | "
                     f"{per_peer(series, 'cpu')} | {per_peer(series, 'resolver_cpu')} | "
                     f"**{rate / base_rate:.1f}x** |")
    default = statistics.median(r.rate for r in runs.get((A, 8), next(iter(runs.values()))))
    lines += [
        "",
        f"- target (at least 30x the baseline's throughput): "
        f"{'**met**' if best >= 30 * base_rate else '**missed**'} "
        f"(best {best / base_rate:.1f}x; the default, 8 in flight: {default / base_rate:.1f}x)",
    ]
    for (label, concurrency), series in runs.items():
        after = runs.get((A, concurrency))
        if label != A_BEFORE or not after:
            continue
        old, new = (statistics.median(r.rate for r in s) for s in (series, after))
        lines.append(f"- before -> after, {concurrency} in flight: {old:.1f} -> {new:.1f} "
                     f"peers/s ({new / old:.2f}x), client CPU per peer "
                     f"{per_peer(series, 'cpu')} -> {per_peer(after, 'cpu')}")
    lines += [
        "- oeagent's times include its interpreter start-up and writing STATE/peers.json; every "
        "peer's classification was checked against what was published",
        "",
        *provenance(command, load[0], when),
        f"- versions: {tool_version(['dig', '-v'])}, "
        f"unbound {tool_version(['unbound', '-V']).split()[-1]}, "
        f"{tool_version(['curl', '--version']).split(' (')[0]}, Python {platform.python_version()}",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--baseline-peers", type=int, default=200,
                        help="peers the dig loop looks up (a sample of all four kinds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--smoke", action="store_true", help="40 peers, 1 round, to check it works")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    parser.add_argument("--before", type=Path,
                        help="a directory holding an older oeagent package (e.g. `git archive "
                             "COMMIT oeagent | tar -x -C DIR`): timed in the same rounds")
    parser.add_argument("--profile", type=Path,
                        help="one more, untimed oeagent run (8 in flight) under py-spy --gil; "
                             "collapsed stacks here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.peers, args.baseline_peers, args.rounds, args.concurrency = 40, 8, 1, [1, 8]
    command = shlex.join(["bench/discovery.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="oeagent-bench-discovery-"))
    lab = Lab(args.lab if args.lab else work / "lab")
    try:
        if not args.lab:
            lab.up()
        peers = make_peers(args.peers, uuid.uuid4().hex[:6])
        webroot = work / "webroot"
        started = time.monotonic()
        publish(lab, peers, webroot)
        wait_signed(lab, peers)
        log(f"{len(peers)} peers published in {time.monotonic() - started:.1f} s")
        peer_file = work / "peers.txt"
        peer_file.write_text("".join(f"{p.name}\n" for p in peers))
        step = max(1, len(peers) // max(1, args.baseline_peers))
        sample = peers[::step][:args.baseline_peers]
        ca = WildcardCA(work / "ca", PLAIN_ZONE)
        port = free_port()
        baselines: list[Run] = []
        sources = [REPO, *([args.before.resolve()] if args.before else [])]
        runs: dict[tuple[str, int], list[Run]] = {
            (label, c): [] for label in (A, A_BEFORE)[:len(sources)] for c in args.concurrency}
        index = 0
        with nginx(work / "nginx", port, ca.chain, ca.key, webroot):
            for n in range(args.rounds):
                time.sleep(COLD_WAIT)
                baselines.append(run_baseline(lab, sample, port, ca.root))
                log(f"round {n + 1}: baseline {baselines[-1].rate:.1f} peers/s, CPU "
                    f"{baselines[-1].cpu:.2f} s, unbound+BIND {baselines[-1].resolver_cpu:.2f} s")
                for concurrency, source in ((c, s) for c in args.concurrency for s in sources):
                    time.sleep(COLD_WAIT)
                    index += 1
                    run = run_oeagent(lab, work, peer_file, peers, concurrency, port, ca.root,
                                      index, source=source)
                    runs[(A if source == REPO else A_BEFORE, concurrency)].append(run)
                    log(f"round {n + 1}: {run.label}: "
                        f"{run.rate:.1f} peers/s ({run.wall:.2f} s, CPU {run.cpu:.2f} s, "
                        f"unbound+BIND CPU {run.resolver_cpu:.2f} s)")
            if args.profile:
                time.sleep(COLD_WAIT)
                run_oeagent(lab, work, peer_file, peers, 8, port, ca.root, index + 1,
                            args.profile)
                log(f"profile (untimed, 8 in flight, py-spy --gil) in {args.profile}")
        table = report(baselines, runs, peers=len(peers), command=command, when=when, load=load)
    finally:
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        shutil.rmtree(work, ignore_errors=True)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the lab and nginx are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
