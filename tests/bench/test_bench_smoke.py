"""A quick run of every benchmark script in its smoke mode, so the scripts cannot rot.

The real runs are `make bench` (not part of the test suite); these only check that each
script still runs end to end against the session's lab and prints its table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import Lab

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def test_enroll_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "enroll.md"
    # The first run ever also creates .bench/certbot-venv (pip install certbot).
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "enroll.py"), "--smoke", "--lab", str(lab.dir),
         "--output", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert table == proc.stdout
    for row in ("| A: `oeagent enroll --force` |", "| B: `certbot certonly", "| floor:"):
        assert row in table
    assert "certbot path / oeagent:" in table
    assert "versions: certbot " in table
