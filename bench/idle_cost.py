"""Benchmark (not a test): what the long-running agent costs while it waits.

Starts a throw-away lab (Pebble issues its default long-lived certificates, so nothing is due),
enrolls, starts ``oeagent run`` with a systemd-style NOTIFY_SOCKET, waits for READY=1 and the
first renewal check, then samples the agent's resident memory and CPU time over the idle
period (default 60 s):

    .venv/bin/python bench/idle_cost.py [--seconds 60] [--watchdog-usec 0]

Run as root (the lab starts daemons). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import Lab  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--watchdog-usec", default="0",
                        help="WATCHDOG_USEC to pass (0: no watchdog, the agent sleeps longest)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oe3-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        lab = Lab(work / "lab")
        info = lab.up()
        try:
            config = info.config_path
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            subprocess.run([sys.executable, "-m", "oeagent", "--config", str(config), "enroll"],
                           check=True, capture_output=True, env=env)
            notify_path = work / "notify"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(notify_path))
            sock.settimeout(30)
            env["NOTIFY_SOCKET"] = str(notify_path)
            if args.watchdog_usec != "0":
                env["WATCHDOG_USEC"] = args.watchdog_usec
            agent = subprocess.Popen(
                [sys.executable, "-m", "oeagent", "--config", str(config), "run"],
                stderr=subprocess.DEVNULL, env=env)
            try:
                while not sock.recv(4096).startswith(b"READY=1"):
                    pass
                time.sleep(3)  # let the first renewal check (at start + 1 s) finish
                cpu0, rss0, t0 = cpu_seconds(agent.pid), rss_kib(agent.pid), time.monotonic()
                time.sleep(args.seconds)
                cpu1, rss1, t1 = cpu_seconds(agent.pid), rss_kib(agent.pid), time.monotonic()
            finally:
                agent.terminate()
                code = agent.wait(30)
                sock.close()
            print(json.dumps({
                "idle_seconds": round(t1 - t0, 1),
                "cpu_seconds_while_idle": round(cpu1 - cpu0, 3),
                "cpu_percent_while_idle": round(100 * (cpu1 - cpu0) / (t1 - t0), 4),
                "rss_kib_start": rss0, "rss_kib_end": rss1,
                "watchdog_usec": args.watchdog_usec, "exit_code_on_sigterm": code,
            }, indent=2))
        finally:
            lab.down()


if __name__ == "__main__":
    main()
