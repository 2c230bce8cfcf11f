"""What every benchmark script shares: naming the machine and writing the report."""

from __future__ import annotations

import contextlib
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
