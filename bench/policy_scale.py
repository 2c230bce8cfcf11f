"""Policy at scale: render, validate and load the OE policy for 10 .. 10,000 authenticated peers.

    .venv/bin/python bench/policy_scale.py [--peers 10 100 1000 10000] [--smoke]
                                           [--output FILE] [--lab DIR]

For each size N, in a fresh network namespace (lab.netns, 198.51.100.0/24) with its own pluto
(lab.pluto: own ipsec directory, NSS database, control socket):

1. N authenticated peers go into oeagent's discovery cache, as ``oeagent discover`` leaves
   them (names ``pNNNNN.oe.test``, addresses in 198.18.0.0/16 (RFC 2544 benchmarking range,
   never a private or public network), which the namespace routes to
   a blackhole: no packet can leave even if a trap fired);
2. render: ``desired()`` + ``render()`` in-process, and ``ipsec addconn --checkconfig`` on the
   result, each timed on its own; then ``oeagent policy --dry-run`` as a process (all of it);
3. load: ``oeagent policy`` as a process inside the namespace while pluto runs (writes the
   files, adds the conns, routes the on-demand traps, rereads the groups, checks pluto holds
   every conn); then pluto's resident memory, the conns in ``whack --status`` and the trap
   policies in the kernel;
4. one more peer: ``oeagent policy`` again, which replaces only the conn that changed;
5. the host enrolls (a certificate under the nickname ``oeagent`` in pluto's NSS database,
   self-signed: pluto needs no trust anchor for its own): ``oeagent policy`` again, and now
   every peer conn authenticates this host with it (mutual authentication), so all change;
6. the pluto step of a renewal: ``oeagent.pluto.reread_certs`` as ``deploy`` calls it, in
   the namespace; with OE group instances up it replaces every conn that uses the
   certificate (pluto 4.10 crashes on ``--rereadcerts`` then), here all N.

Needs root (namespaces, pluto). The lab is used only for its config writer.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12  # noqa: E402

from bench.common import emit, provenance  # noqa: E402
from lab import Lab  # noqa: E402
from lab.netns import Network, in_namespace  # noqa: E402
from lab.pluto import Pluto  # noqa: E402
from oeagent import config as config_module  # noqa: E402
from oeagent import pluto as pluto_module  # noqa: E402
from oeagent.advertisement import Advertisement  # noqa: E402
from oeagent.discovery.cache import PeerCache  # noqa: E402
from oeagent.discovery.lookup import Result  # noqa: E402
from oeagent.policy import desired, install, render  # noqa: E402
from oeagent.state import StateDir  # noqa: E402

PEER_NET = "198.18"  # 198.18.0.0/16 (RFC 2544 benchmarking), blackholed in the namespace


def log(message: str) -> None:
    sys.stderr.write(f"[bench-policy] {message}\n")
    sys.stderr.flush()


def peer_address(i: int) -> str:
    return f"{PEER_NET}.{i // 250}.{i % 250 + 1}"


def remember_peers(state_dir: Path, first: int, count: int, now: dt.datetime) -> None:
    state = StateDir(state_dir)
    state.ensure()
    cache = PeerCache(state)
    for i in range(first, first + count):
        fqdn = f"p{i:05d}.oe.test"
        ad = Advertisement(fqdn, "ecdsa", ("ab" * 32,), "enforce", 86400)
        cache.update(Result(fqdn, fqdn, "authenticated", "dns", ad,
                            now + dt.timedelta(days=1), (peer_address(i),)), now)
    cache.save()


def enroll_host(node: Pluto, fqdn: str, state_dir: Path, now: dt.datetime) -> None:
    """What an enrollment leaves: a key and certificate for ``fqdn`` under the nickname
    ``oeagent`` in pluto's NSS database, and the deployment record the policy reads."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, fqdn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
            .sign(key, hashes.SHA256()))
    p12 = node.dir / "host.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"oeagent", key, cert, None,
                                                          NoEncryption()))
    subprocess.run(["pk12util", "-i", str(p12), "-d", node.nss_database, "-W", ""],
                   check=True, capture_output=True, timeout=60)
    StateDir(state_dir).write_json(StateDir(state_dir).deployed_path,
                                   {"database": node.nss_database, "nickname": "oeagent"})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Row:
    peers: int
    render: float
    checkconfig: float
    dry_run: float
    load: float
    one_more: float
    enrolled: float
    renewal: float
    rss_before: int
    rss_after: int
    conns: int
    traps: int
    conf_bytes: int


def policy_cli(node: Pluto, config: Path, *args: str, timeout: float) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        node.host.argv([sys.executable, *(
            [os.environ["BENCH_POLICY_RUNNER"]] if os.environ.get("BENCH_POLICY_RUNNER")
            else ["-m", "oeagent"]), "--config", str(config), "policy", *args]),
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"oeagent policy {' '.join(args)} failed: {done.stderr[-2000:]}")
    if os.environ.get("BENCH_POLICY_RUNNER"):
        log(done.stderr[-1500:])
    return wall


def measure(lab: Lab, count: int, base: Path, timeout: float) -> Row:
    now = dt.datetime.now(dt.UTC)
    with Network(prefix="ob8-") as net:
        node = Pluto(net.add_host("p", 10), base / f"n{count}")
        node.host.run(["ip", "route", "add", "blackhole", f"{PEER_NET}.0.0/16"])
        node.start()
        pluto_pid = node.host.processes[-1].pid
        settings = {
            "pluto.ctlsocket": str(node.ctlsocket), "pluto.ipsec_dir": str(node.ipsec_dir),
            "nss.database": node.nss_database, "state_dir": str(node.dir / "state"),
            "policy.private_or_clear": ["198.51.100.0/24"], "discovery.resolver": "127.0.0.1",
        }
        config = lab.write_config(node.dir / "oeagent.toml", settings, root=node.dir)
        remember_peers(node.dir / "state", 0, count, now)
        cfg = config_module.load(config)
        start = time.perf_counter()
        files = render.render(desired(cfg, StateDir(cfg.state_dir), now), now)
        rendered = time.perf_counter() - start
        start = time.perf_counter()
        install.checkconfig(files)
        checked = time.perf_counter() - start
        dry = policy_cli(node, config, "--dry-run", timeout=timeout)
        rss_before = rss_kib(pluto_pid)
        load = policy_cli(node, config, timeout=timeout)
        rss_after = rss_kib(pluto_pid)
        status = node.whack("--status")
        conns = len(set(re.findall(r'"(oeagent-peer-[^"#/]+)', status)))
        traps = sum(line.startswith("src ") for line in
                    node.host.run(["ip", "xfrm", "policy"], timeout=120).stdout.splitlines())
        remember_peers(node.dir / "state", count, 1, now)
        more = policy_cli(node, config, timeout=timeout)
        enroll_host(node, cfg.host.names[0], node.dir / "state", now)
        enrolled = policy_cli(node, config, timeout=timeout)
        with in_namespace(node.host.namespace):  # addconn reads %defaultroute where it runs
            start = time.perf_counter()
            said = pluto_module.reread_certs(node.ctlsocket, timeout=timeout,
                                             nickname="oeagent", ipsec_dir=node.ipsec_dir)
            renewal = time.perf_counter() - start
        if not said or "replaced" not in said:
            raise SystemExit(f"the renewal's pluto step did not replace the conns: {said}")
        return Row(count, rendered, checked, dry, load, more, enrolled, renewal, rss_before,
                   rss_after, conns, traps, len(files[render.CONF]))


def libreswan_version() -> str:
    out = subprocess.run(["ipsec", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout.strip().splitlines() or ["?"])[0]


def report(rows: list[Row], *, command: str, when: dt.datetime,
           load: tuple[float, float, float]) -> str:
    def s(x: float) -> str:
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"

    lines = [
        "Policy at scale: N authenticated peers (one conn each, `auto=ondemand`), in a network "
        "namespace with its own pluto.", "",
        "| peers | render | `addconn --checkconfig` | `policy --dry-run` (process) | "
        "load into pluto (`oeagent policy`) | +1 peer, reload | host enrolls, reload | "
        "renewal's pluto step | pluto RSS before → after | conns held / kernel traps | "
        "oeagent.conf |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.peers} | {s(r.render)} | {s(r.checkconfig)} | {s(r.dry_run)} | "
            f"{s(r.load)} ({r.load / r.peers * 1000:.2f} ms/peer) | {s(r.one_more)} | "
            f"{s(r.enrolled)} | {s(r.renewal)} | "
            f"{r.rss_before / 1024:.1f} → {r.rss_after / 1024:.1f} MiB | "
            f"{r.conns} / {r.traps} | {r.conf_bytes / 1024:.0f} KiB |")
    lines += [
        "",
        *provenance(command, load[0], when),
        f"- versions: {libreswan_version()}, Python {platform.python_version()}",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--smoke", action="store_true", help="10 and 50 peers")
    parser.add_argument("--timeout", type=float, default=1800, help="per oeagent run")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    args = parser.parse_args(argv)
    if args.smoke:
        args.peers = [10, 50]
    if max(args.peers) > 250 * 250:
        parser.error("at most 62500 peers")
    command = shlex.join(["bench/policy_scale.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    loadavg = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="ob8-", dir="/tmp"))  # short: Unix socket paths
    lab = Lab(args.lab if args.lab else base / "lab")
    rows: list[Row] = []
    try:
        if not args.lab:
            lab.up()
        for count in args.peers:
            rows.append(measure(lab, count, base, args.timeout))
            r = rows[-1]
            log(f"{count} peers: render {r.render:.3f} s, checkconfig {r.checkconfig:.3f} s, "
                f"load {r.load:.2f} s, +1 {r.one_more:.2f} s, enrolled {r.enrolled:.2f} s, "
                f"renewal {r.renewal:.2f} s, pluto RSS {r.rss_after} KiB, "
                f"{r.conns} conns, {r.traps} traps")
    finally:
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        shutil.rmtree(base, ignore_errors=True)
    table = report(rows, command=command, when=when, load=loadavg)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so namespaces, plutos and the lab are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
