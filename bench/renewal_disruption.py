"""Renewal disruption: with pluto running, how long the nickname has no certificate during
``oeagent renew --force``, and whether an established IKE SA survives the renewal.

    .venv/bin/python bench/renewal_disruption.py [--rounds 5] [--smoke] [--output FILE] [--lab DIR]

Two hosts in network namespaces (lab.netns, 198.51.100.0/24), each with its own pluto
(lab.pluto). The server's pluto uses the NSS database oeagent deploys into (``leftcert=oeagent``,
``leftid=@server.oe.test``); the client trusts Pebble's root and authenticates the server by
name (``rightid=@server.oe.test``), itself with NULL authentication. oeagent runs outside the
namespaces against the lab's Pebble and tells the server's pluto over its control socket.

1. ``oeagent enroll``; start both plutos; the client initiates: one IKE SA, the server
   authenticated by its certificate;
2. each round: a thread runs ``certutil -L -n oeagent`` in a tight loop on the server's
   database while ``oeagent renew --force`` runs; the gap is the longest run of polls that did
   not find the nickname (resolution: the poll interval, also reported), next to the window
   the swap itself measures and reports (``swap_window_seconds``);
3. meanwhile a second thread watches the client's IKE SAs (``whack --showstates`` back to
   back): when the SA it had disappears, it initiates again every 0.5 s, as traffic hitting an
   on-demand trap would, and records how long until a new IKE SA is established;
4. after each renewal: is the IKE SA (same serial, ``#N``) still established on both sides,
   does pluto list the new certificate, and does a new IKE SA authenticate the new one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import emit, provenance  # noqa: E402
from lab import Lab  # noqa: E402
from lab.netns import Network  # noqa: E402
from lab.pluto import Pluto  # noqa: E402

NAME = "server.oe.test"


def log(message: str) -> None:
    sys.stderr.write(f"[bench-renewal] {message}\n")
    sys.stderr.flush()


class Poller(threading.Thread):
    """``certutil -L -n NICK`` back to back; remembers (time, found) for each poll."""

    def __init__(self, database: str, nickname: str) -> None:
        super().__init__(daemon=True)
        self.argv = ["certutil", "-L", "-d", database, "-n", nickname]
        self.samples: list[tuple[float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            found = subprocess.run(self.argv, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=False).returncode == 0
            self.samples.append((time.monotonic(), found))

    def longest_gap(self) -> float:
        """From the last poll that found it to the first that found it again, longest."""
        gap, last_found, missing = 0.0, None, False
        for t, found in self.samples:
            if found:
                if missing and last_found is not None:
                    gap = max(gap, t - last_found)
                last_found, missing = t, False
            else:
                missing = True
        return gap

    def misses(self) -> int:
        return sum(not found for _, found in self.samples)

    def interval(self) -> float:
        times = [t for t, _ in self.samples]
        return statistics.median(b - a for a, b in itertools.pairwise(times))


class SaWatcher(threading.Thread):
    """Watches the client's IKE SAs; once ``old`` is gone, re-initiates every 0.5 s (as
    packets hitting an on-demand trap would) until a new IKE SA is established."""

    def __init__(self, node: Pluto, old: str, timeout: float = 30) -> None:
        super().__init__(daemon=True)
        self.node, self.old, self.timeout = node, old, timeout
        self.known = established_ike_sas(node)
        self.gone: float | None = None
        self.up: float | None = None
        self.new_sa: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        last_initiate = 0.0
        while not self.stop.wait(0.05):  # each poll is a whack process: keep the load low
            now = time.monotonic()
            current = established_ike_sas(self.node)
            if self.gone is None:
                if self.old in current:
                    continue
                self.gone = now
            fresh = current - self.known
            if fresh:
                self.up = now
                self.new_sa = sorted(fresh, key=lambda s: int(s[1:]))[-1]
                return
            if now - self.gone > self.timeout:
                return
            if now - last_initiate >= 0.5:
                self.node.whack("--initiate", "--name", "bench", "--asynchronous", check=False)
                last_initiate = now

    def outage(self) -> float | None:
        return None if self.gone is None or self.up is None else self.up - self.gone


def oeagent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oeagent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=180, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PYTHONPATH": str(REPO)})


def established_ike_sas(node: Pluto) -> set[str]:
    """Serials (``#N``) of the established IKE SAs of conn ``bench``."""
    status = node.whack("--showstates", check=False)
    return set(re.findall(r'(#\d+): "bench"[^\n]*ESTABLISHED_IKE_SA', status))


def wait_for_new_sa(node: Pluto, known: set[str], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = established_ike_sas(node) - known
        if new:
            return sorted(new, key=lambda s: int(s[1:]))[-1]
        time.sleep(0.05)
    raise SystemExit(f"no IKE SA established:\n{node.log_text()[-3000:]}")


def listed_serial(node: Pluto) -> str:
    found = re.search(r'End certificate "oeagent" - SN: 0x([0-9a-f]+)',
                      node.whack("--listcerts"))
    return format(int(found.group(1), 16), "x") if found else "none"


def deployed_serial(config: Path) -> str:
    """The serial oeagent deployed last (STATE/current.json, the state under the config)."""
    return str(json.loads((config.parent / "state" / "current.json").read_text())["serial"])


@dataclass
class Round:
    gap: float
    misses: int
    polls: int
    interval: float
    window: float | None
    wall: float
    survived_client: bool
    survived_server: bool
    pluto_has_new: bool
    new_sa_ok: bool
    outage: float | None  # client: old IKE SA gone -> new one established (re-initiating)
    pluto_exit: int | None  # the server's pluto died during the renewal (its exit status)


def swap_window(output: str) -> float | None:
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            found = _find(data, "swap_window_seconds")
            if isinstance(found, int | float):
                return float(found)
    return None


def _find(data: object, key: str) -> object:
    if isinstance(data, dict):
        if data.get(key) is not None:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f} ms"


def conn(node: Pluto, name: str, text: str) -> None:
    (node.ipsec_dir / name).write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one round")
    parser.add_argument("--no-reread", action="store_true",
                        help="control: do not tell pluto (pluto.ctlsocket points nowhere), so "
                             "only the NSS swap happens under the running pluto")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    args = parser.parse_args(argv)
    rounds = 1 if args.smoke else args.rounds
    command = shlex.join(["bench/renewal_disruption.py",
                          *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="ob9-", dir="/tmp"))  # short: Unix socket paths
    lab = Lab(args.lab if args.lab else base / "lab")
    results: list[Round] = []
    try:
        if not args.lab:
            lab.up()
        with Network(prefix="ob9-") as net:
            server = Pluto(net.add_host("srv", 10), base / "srv")
            client = Pluto(net.add_host("cli", 11), base / "cli")
            for node in (server, client):
                node.prepare()
            subprocess.run(["certutil", "-A", "-d", client.nss_database, "-n", "pebble-root",
                            "-t", "CT,,", "-a", "-i", str(lab.info.pebble_root_pem)],
                           check=True, capture_output=True, timeout=30)
            config = lab.write_config(base / "oeagent.toml", {
                "nss.database": server.nss_database,
                "pluto.ctlsocket": str(base / "absent.ctl" if args.no_reread
                                       else server.ctlsocket),
                # The server's conn is in oeagent.conf: oeagent can replace it after a deploy.
                "pluto.ipsec_dir": str(server.ipsec_dir),
                "host.names": [NAME]}, root=base)
            done = oeagent(config, "enroll")
            if done.returncode != 0:
                raise SystemExit(f"enroll failed: {done.stderr[-2000:]}")
            conn(server, "oeagent.conf",
                 f"conn bench\n\tleft={server.host.address}\n\tleftcert=oeagent\n"
                 f"\tleftid=@{NAME}\n\tleftauth=ecdsa\n\tsendca=all\n\tright=%any\n"
                         "\trightid=%null\n\trightauth=null\n\tikev2=insist\n\tauto=add\n")
            conn(client, "bench.conf", f"conn bench\n\tleft={client.host.address}\n\tleftid=%null\n"
                         f"\tleftauth=null\n\tright={server.host.address}\n\trightid=@{NAME}\n"
                         "\trightauth=ecdsa\n\tikev2=insist\n\tauto=add\n")
            for node in (server, client):
                node.start()
                node.load()
            client.whack("--initiate", "--name", "bench", "--asynchronous")
            first = wait_for_new_sa(client, set())
            server_sas = established_ike_sas(server)
            log(f"IKE SA {first} established (server side {sorted(server_sas)})")
            for n in range(rounds):
                time.sleep(1.1)  # certificates differ in notBefore to the second
                poller = Poller(server.nss_database, "oeagent")
                poller.start()
                watched = first
                watcher = SaWatcher(client, watched)
                watcher.start()
                time.sleep(0.2)
                start = time.perf_counter()
                done = oeagent(config, "--json", "renew", "--force")
                wall = time.perf_counter() - start
                time.sleep(0.2)
                poller.stop.set()
                poller.join(10)
                if watcher.gone is not None:
                    watcher.join(watcher.timeout + 5)  # let it see the new SA up
                watcher.stop.set()
                watcher.join(10)
                if done.returncode != 0:
                    raise SystemExit(f"renew failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
                crashed = server.host.processes[-1].poll()
                known = established_ike_sas(client)
                if crashed is not None:
                    log(f"round {n + 1}: the server's pluto exited ({crashed}) during the "
                        f"renewal; its log ends:\n{server.log_text()[-600:]}")
                    survived_client = survived_server = has_new = False
                    # New plutos on both sides, and a new IKE SA for the next round.
                    for node in (server, client):
                        node.host.stop_processes()
                        node.start()
                        node.load()
                    has_new = listed_serial(server) == deployed_serial(config)
                    known = set()
                else:
                    survived_client = first in known
                    survived_server = bool(server_sas & established_ike_sas(server))
                    has_new = listed_serial(server) == deployed_serial(config)
                new_ok = True
                if crashed is None and watcher.new_sa is not None:
                    # The watcher's SA was negotiated after the old one ended, so with the
                    # conn re-added and the new certificate; a second initiate would not
                    # make another one.
                    newest = watcher.new_sa
                else:
                    client.whack("--initiate", "--name", "bench", "--asynchronous",
                                 check=False)
                    try:
                        newest = wait_for_new_sa(client, known, timeout=10)
                    except SystemExit:
                        new_ok = False
                if new_ok:  # the next round watches the SA that is up now
                    first, server_sas = newest, established_ike_sas(server)
                results.append(Round(poller.longest_gap(), poller.misses(),
                                     len(poller.samples), poller.interval(),
                                     swap_window(done.stdout), wall, survived_client,
                                     survived_server, has_new, new_ok,
                                     watcher.outage() if crashed is None else None, crashed))
                r = results[-1]
                if os.environ.get("BENCH_RENEWAL_VERBOSE"):
                    log(f"renew output: {done.stdout}")
                log(f"round {n + 1}: gap {r.gap * 1000:.0f} ms ({r.misses} of {r.polls} polls "
                    f"missed, one every {r.interval * 1000:.1f} ms), swap window "
                    f"{(r.window or 0) * 1000:.0f} ms, SA {watched} survived: client "
                    f"{survived_client}, server {survived_server}; pluto has the new "
                    f"certificate: {has_new}; new SA: {new_ok}; old SA gone -> new SA up "
                    f"{ms(r.outage)}")
    finally:
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        shutil.rmtree(base, ignore_errors=True)

    windows = [r.window for r in results if r.window is not None]
    lines = [
        f"Renewal disruption, {len(results)} renewals (`oeagent renew --force`) with pluto "
        "running in a network namespace on the NSS database, one IKE SA established before"
        + (" (control: pluto not told, no `whack --rereadcerts`)." if args.no_reread else
           "; oeagent then tells pluto: it replaces the conns that use the certificate, because "
           "pluto 4.10 crashes on `whack --rereadcerts` while such an SA is up."),
        "",
        "| round | nickname missing (polled) | polls missed / total | poll interval | "
        "swap's own window | renew wall | server's pluto | IKE SA survived (client / server) |"
        " old SA gone → new IKE SA up | pluto lists the new cert | new IKE SA with it |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for i, r in enumerate(results, 1):
        lines.append(
            f"| {i} | {ms(r.gap) if r.misses else '0 (never seen missing)'} | {r.misses} / "
            f"{r.polls} | {r.interval * 1000:.1f} ms | {ms(r.window)} | {ms(r.wall)} | "
            f"{'ran on' if r.pluto_exit is None else f'**died** (exit {r.pluto_exit})'} | "
            f"{'yes' if r.survived_client else 'no'} / {'yes' if r.survived_server else 'no'} |"
            f" {'n/a (kept)' if r.survived_client else ms(r.outage)} |"
            f" {'yes' if r.pluto_has_new else 'no'} | {'yes' if r.new_sa_ok else 'no'} |")
    crashes = [r.pluto_exit for r in results if r.pluto_exit is not None]
    outages = [r.outage for r in results if r.outage is not None]
    lines += [
        "",
        "- window without a certificate: median "
        f"{ms(statistics.median(windows) if windows else None)}, max {ms(max(windows) if windows else None)} (the swap's own measurement); "  # noqa: E501
        f"polled: max {ms(max(r.gap for r in results))}",
        f"- the IKE SA established before survived every renewal: "
        f"{'**yes**' if all(r.survived_client and r.survived_server for r in results) else '**no**'}"  # noqa: E501
        + (f"; the server's pluto died in {len(crashes)} of {len(results)} renewals "
           f"(exit statuses {sorted(set(crashes))}; -11 is SIGSEGV) and was restarted"
           if crashes else ""),
        "- where it did not survive: from the client's old IKE SA disappearing to a new one "
        "established, the client re-initiating every 0.5 s as traffic would: "
        + (f"median {ms(statistics.median(outages))}, max {ms(max(outages))}"
           if outages else "n/a"),
        "",
        *provenance(command, load[0], when),
        "",
    ]
    table = "\n".join(lines)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so namespaces, plutos and the lab are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
