"""What every benchmark script shares: naming the machine and writing the report."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def emit(table: str, output: Path | None) -> None:
    """Print the Markdown report, and keep a copy in ``output`` when asked."""
    sys.stdout.write(table)
    if output:
        output.write_text(table)


def provenance(command: str, load_before: float, when: dt.datetime) -> list[str]:
    """The report's command, machine (with the load around the run) and date lines."""
    return [
        f"- command: `{command}`, as root",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(a shared machine)",
        f"- date: {when:%Y-%m-%d %H:%M} UTC",
    ]
