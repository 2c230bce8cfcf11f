"""The agent's cost: ``oeagent run`` idle (resident memory, CPU), and the start-up of
``oeagent --help`` and ``oeagent status`` against ``python -c pass``.

    .venv/bin/python bench/idle_cost.py [--seconds 60] [--runs 20] [--smoke] [--output FILE]
                                        [--lab DIR] [--watchdog-usec 900000000]

A host of its own in the lab zone is enrolled with publishing on (``rfc2136`` to the lab's
BIND, verified through unbound, and ``zonefile``) and two peers in its discovery cache (its own
signed advertisement and a name with nothing), so the agent has all three jobs to schedule:
renew, publish, discovery. ``oeagent run`` starts with a systemd-style ``NOTIFY_SOCKET`` and,
by default, the ``WATCHDOG_USEC`` the shipped unit sets (``WatchdogSec=15min``). Once it said
READY=1 and every job finished its first run (its second "next run at" log line), the agent's
own CPU time (utime+stime from /proc) and resident memory (VmRSS, sampled every second; VmHWM
is the peak since start) are taken over the idle period. Then, in the same run, ``python -c
pass``, ``oeagent --help`` and ``oeagent status`` (this host) are started in rotation as in
``bench/startup.py``. ``--smoke``: 5 s idle and 3 rotations, to check the script works.
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
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import dns.query
import dns.rcode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import emit, provenance  # noqa: E402
from bench.startup import acme_free, rotation, startup_table  # noqa: E402
from lab import Lab  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
JOBS = ("renew", "publish", "discovery")
RSS_TARGET_MB = 60.0
CPU_TARGET_PERCENT = 1.0
WELL_UNDER = 10  # "well under 1 %": at least ten times under, i.e. below 0.1 % of a core


def log(message: str) -> None:
    sys.stderr.write(f"[bench-idle] {message}\n")
    sys.stderr.flush()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own utime+stime, waited-for children's) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) / TICKS,
            (int(fields[13]) + int(fields[14])) / TICKS)


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and the context switches from /proc/PID/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            values[key] = int(rest.split()[0])
    return values


def pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def fresh_name(lab: Lab) -> str:
    """A name of this run's own in the signed zone, with an explicit A record (records of ours
    at the name hide the zone's wildcard)."""
    name = f"idle{uuid.uuid4().hex[:8]}.{lab.info.zone}"
    update = lab.update_message(lab.info.zone)
    update.replace(name + ".", 60, "A", "127.0.0.1")
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    if reply.rcode() != dns.rcode.NOERROR:
        raise SystemExit(f"adding {name}: {dns.rcode.to_text(reply.rcode())}")
    return name


def oeagent(py: str, config: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run([py, "-m", "oeagent", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    if done.returncode != 0:
        raise SystemExit(f"oeagent {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stdout[-1500:]}{done.stderr[-1500:]}")


def first_runs_done(log_text: str) -> bool:
    """Every job logged "next run at" twice: once when scheduled at start, once after its
    first run."""
    return all(len(re.findall(rf"\b{job}: next run at", log_text)) >= 2 for job in JOBS)


def next_runs(log_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for job, when in re.findall(r"\b(\w+): next run at (\S+)", log_text):
        found[job] = when
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="idle period (default 60)")
    parser.add_argument("--runs", type=int, default=20, help="start-up rotations (default 20)")
    parser.add_argument("--smoke", action="store_true", help="5 s idle, 3 rotations")
    parser.add_argument("--watchdog-usec", default="900000000",
                        help="WATCHDOG_USEC for the agent (default: the unit's WatchdogSec=15min;"
                             " 0: no watchdog)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    args = parser.parse_args(argv)
    seconds = 5.0 if args.smoke else args.seconds
    runs = 3 if args.smoke else args.runs
    command = shlex.join(["bench/idle_cost.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="oeagent-bench-idle-", dir="/tmp"))
    lab = Lab(args.lab if args.lab else work / "lab")
    py = sys.executable
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    agent: subprocess.Popen[bytes] | None = None
    try:
        if not args.lab:
            lab.up()
        name = fresh_name(lab)
        config = lab.write_config(work / "oeagent.toml", {
            "host.names": [name],
            "publish.backends": ["rfc2136", "zonefile"],
            "discovery.resolver": "127.0.0.1",
            "discovery.resolver_port": lab.info.unbound_port,
        }, root=work)
        oeagent(py, config, env, "enroll")  # also publishes
        peers = [name, f"nothing{uuid.uuid4().hex[:8]}.{lab.info.zone}"]
        oeagent(py, config, env, "discover", *peers)
        log(f"enrolled and published {name}; discovery cache: {', '.join(peers)}")

        notify_path = work / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        sock.settimeout(60)
        agent_env = {**env, "NOTIFY_SOCKET": str(notify_path)}
        if args.watchdog_usec != "0":
            agent_env["WATCHDOG_USEC"] = args.watchdog_usec
        agent_log = work / "agent.log"
        with agent_log.open("wb") as log_file:
            started = time.monotonic()
            agent = subprocess.Popen([py, "-m", "oeagent", "--config", str(config), "run"],
                                     stdout=subprocess.DEVNULL, stderr=log_file, env=agent_env)
        try:
            while not sock.recv(4096).startswith(b"READY=1"):
                pass
        finally:
            sock.close()
        ready = time.monotonic() - started
        deadline = time.monotonic() + 120
        while not first_runs_done(agent_log.read_text()):
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent's first runs did not finish:\n"
                                 f"{agent_log.read_text()[-3000:]}")
            time.sleep(0.1)
        first_done = time.monotonic() - started
        time.sleep(0.5)  # the log line comes just before the job returns
        log_before = agent_log.read_text()
        (cpu0, child0), st0, t0 = cpu_seconds(agent.pid), status_kib(agent.pid), time.monotonic()
        rss_samples = [st0["VmRSS"]]
        while time.monotonic() - t0 < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
            rss_samples.append(status_kib(agent.pid)["VmRSS"])
        (cpu1, child1), st1, t1 = cpu_seconds(agent.pid), status_kib(agent.pid), time.monotonic()
        pss = pss_kib(agent.pid)
        log_idle = agent_log.read_text()[len(log_before):]
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(30)
        agent = None
        log(f"agent stopped, exit {code}; start-up rotation ({runs} runs)")

        commands = {
            "`python -c pass`": [py, "-c", "pass"],
            "`oeagent --help`": [py, "-m", "oeagent", "--help"],
            "`oeagent status` (this enrolled host)": [py, "-m", "oeagent", "--config",
                                                      str(config), "status"],
        }
        times, heavy = rotation(commands, runs, env)
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        shutil.rmtree(work, ignore_errors=True)

    idle = t1 - t0
    cpu = cpu1 - cpu0
    tick = 1 / TICKS  # /proc counts CPU time in clock ticks: 0 means less than one
    percent = 100 * max(cpu, tick) / idle  # an upper bound when no tick was counted
    rss_max_mb = max(rss_samples) * 1024 / 1e6
    wakeups = (st1["voluntary_ctxt_switches"] + st1["nonvoluntary_ctxt_switches"]
               - st0["voluntary_ctxt_switches"] - st0["nonvoluntary_ctxt_switches"])
    job_pattern = re.compile(r"\b(?:" + "|".join(JOBS) + "):")
    job_lines = [line for line in log_idle.splitlines() if job_pattern.search(line)]
    rss_ok = rss_max_mb < RSS_TARGET_MB
    cpu_ok = percent < CPU_TARGET_PERCENT / WELL_UNDER
    nexts = next_runs(log_before)

    def mb(kib: int) -> str:
        return f"{kib * 1024 / 1e6:.1f} MB ({kib / 1024:.1f} MiB)"

    lines = [
        f"The idle agent: `oeagent run` with renew, publish (rfc2136 + zonefile) and discovery "
        f"(2 peers) scheduled, measured over {idle:.1f} s after every job's first run.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| resident memory (VmRSS) while idle, max of {len(rss_samples)} samples | "
        f"{mb(max(rss_samples))} |",
        f"| resident memory at the start / end of the idle period | {mb(st0['VmRSS'])} / "
        f"{mb(st1['VmRSS'])} |",
        f"| peak resident memory since start (VmHWM, includes the first job runs) | "
        f"{mb(st1['VmHWM'])} |",
        f"| proportional set size (PSS) at the end | {mb(pss)} |",
        (f"| CPU (user+sys) while idle | {cpu * 1000:.0f} ms in {idle:.1f} s = "
         f"**{percent:.3f} % of a core** |" if cpu else
         f"| CPU (user+sys) while idle | 0 ms (less than one {tick * 1000:.0f} ms clock tick) in "
         f"{idle:.1f} s = **under {percent:.3f} % of a core** |"),
        f"| CPU of child processes while idle | {(child1 - child0) * 1000:.0f} ms |",
        f"| context switches while idle (wake-ups) | {wakeups} |",
        f"| job log lines while idle | {len(job_lines)} |",
        f"| start → READY=1 / → every job's first run done | {ready * 1000:.0f} ms / "
        f"{first_done * 1000:.0f} ms |",
        f"| CPU from start to the idle period (own / children) | {cpu0 * 1000:.0f} ms / "
        f"{child0 * 1000:.0f} ms |",
        "",
        f"- target, resident memory under {RSS_TARGET_MB:.0f} MB: "
        f"**{'met' if rss_ok else 'missed'}** ({rss_max_mb:.1f} MB)",
        f"- target, CPU well under {CPU_TARGET_PERCENT:.0f} % of a core (taken here as at least "
        f"{WELL_UNDER}x under: below {CPU_TARGET_PERCENT / WELL_UNDER:.1f} %): "
        f"**{'met' if cpu_ok else 'missed'}** ({'' if cpu else 'under '}{percent:.3f} %)",
        "- next runs as scheduled after the first ones: "
        + ", ".join(f"{job} {nexts.get(job, '?')}" for job in JOBS)
        + f"; WATCHDOG_USEC {args.watchdog_usec}; exit status on SIGTERM: {code}",
        "",
        f"Start-up in the same run, {runs} runs of each command in rotation, medians (same "
        "interpreter).",
        "",
        *startup_table(times, heavy, "`python -c pass`"),
        "",
        "- the ACME stack (acme, josepy, requests) is imported by neither: "
        + ("**yes**" if acme_free(heavy) else "**no**"),
        "",
        *provenance(command, load[0], when),
        f"- versions: Python {platform.python_version()}",
        "",
    ]
    table = "\n".join(lines)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the agent and the lab are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
