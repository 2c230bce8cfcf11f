"""Start-up cost: ``oeagent --help`` and ``oeagent status`` against ``python3 -c pass``.

    .venv/bin/python bench/startup.py [--runs 30] [--smoke] [--output FILE] [--lab DIR]

Every command is a fresh process of the same interpreter (the virtual environment's), run in
rotation (pass, --help, status, pass, --help, status, ...); median wall time of each and its
ratio to ``python -c pass``. ``status`` runs against an enrolled host (a lab is started and
``oeagent enroll`` run first, or ``--lab DIR`` for one already up): it reads the state, asks
``certutil`` about the NSS database and pluto's socket, as on a real host. Each command is
also run once with ``-X importtime`` to list which heavy packages it imported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import emit, provenance  # noqa: E402
from lab import Lab  # noqa: E402

HEAVY = ("acme", "josepy", "requests", "urllib3", "dns", "cryptography", "schedule")
ACME_STACK = {"acme", "josepy", "requests"}


def log(message: str) -> None:
    sys.stderr.write(f"[bench-startup] {message}\n")
    sys.stderr.flush()


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   timeout=60, check=False)
    return time.perf_counter() - start


def imported(argv: list[str], env: dict[str, str]) -> list[str]:
    """Heavy top-level packages the command imports (``-X importtime``)."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def rotation(commands: dict[str, list[str]], runs: int, env: dict[str, str],
             ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Wall times of ``runs`` rotations over ``commands`` (after one warm-up run of each), and
    the heavy packages each imports."""
    for argv_ in commands.values():  # warm the page cache and .pyc files
        run(argv_, env)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv_ in commands.items():
            times[label].append(run(argv_, env))
    return times, {label: imported(argv_, env) for label, argv_ in commands.items()}


def startup_table(times: dict[str, list[float]], heavy: dict[str, list[str]], base_label: str,
                  ) -> list[str]:
    """The Markdown table: per command its median, min-max, ratio to and time beyond
    ``base_label``, and its heavy imports."""
    base = statistics.median(times[base_label])
    rows = [
        f"| command | wall (median) | min-max | vs {base_label} | beyond it | heavy imports |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, samples in times.items():
        med = statistics.median(samples)
        rows.append(
            f"| {label} | {med * 1000:.0f} ms | {min(samples) * 1000:.0f}-"
            f"{max(samples) * 1000:.0f} ms | {med / base:.1f}x | +{(med - base) * 1000:.0f} ms |"
            f" {', '.join(heavy[label]) or 'none'} |")
    return rows


def acme_free(heavy: dict[str, list[str]]) -> bool:
    """No command imported the ACME stack."""
    return not any(set(h) & ACME_STACK for h in heavy.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="runs of each command")
    parser.add_argument("--smoke", action="store_true", help="3 runs each")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lab", type=Path, help="use the lab already up in this directory")
    args = parser.parse_args(argv)
    runs = 3 if args.smoke else args.runs
    command = shlex.join(["bench/startup.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="oeagent-bench-startup-"))
    lab = Lab(args.lab if args.lab else work / "lab")
    try:
        if not args.lab:
            lab.up()
        config = lab.write_config(work / "oeagent.toml", root=work)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
        py = sys.executable
        enrolled = subprocess.run([py, "-m", "oeagent", "--config", str(config), "enroll"],
                                  capture_output=True, text=True, env=env, timeout=120,
                                  check=False)
        if enrolled.returncode != 0:
            raise SystemExit(f"enroll failed: {enrolled.stderr[-2000:]}")
        commands = {
            "`python -c pass`": [py, "-c", "pass"],
            "`oeagent --help`": [py, "-m", "oeagent", "--help"],
            "`oeagent status` (enrolled host)": [py, "-m", "oeagent", "--config", str(config),
                                                 "status"],
        }
        status = subprocess.run(commands["`oeagent status` (enrolled host)"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        log(f"status exit {status.returncode}: {status.stdout.strip().splitlines()[:1]}")
        times, heavy = rotation(commands, runs, env)
    finally:
        if not args.lab:
            with contextlib.suppress(Exception):
                lab.down()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"Start-up, {runs} runs of each command in rotation, medians (same interpreter).", "",
        *startup_table(times, heavy, "`python -c pass`"),
        "",
        f"- the ACME stack (acme, josepy, requests) is imported by neither: "
        f"{'**yes**' if acme_free(heavy) else '**no**'} (`tests/unit/test_startup_imports.py` "
        "keeps it so)",
        "",
        *provenance(command, load[0], when),
        f"- versions: Python {platform.python_version()}",
        "",
    ]
    table = "\n".join(lines)
    emit(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
