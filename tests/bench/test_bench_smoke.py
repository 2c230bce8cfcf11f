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


def _smoke(script: str, lab: Lab, out: Path, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", "--lab", str(lab.dir),
         "--output", str(out)],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert table == proc.stdout
    assert "- command: `bench/" in table and "- machine: " in table
    return table


def test_discovery_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    # 40 peers of the four kinds, the dig loop on 8 of them, oeagent with 1 and 8 in flight;
    # the script itself checks every peer's classification.
    table = _smoke("discovery.py", lab, tmp_path / "discovery.md")
    assert "| B: one `dig +dnssec` per record oeagent asks" in table
    assert "| A: `oeagent discover`, 8 in flight |" in table
    assert "target (at least 30x the baseline's throughput)" in table


def test_policy_scale_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    table = _smoke("policy_scale.py", lab, tmp_path / "policy.md")
    assert "| 10 |" in table and "| 50 |" in table
    assert "| 50 / " in table  # pluto holds all 50 peer conns


def test_startup_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    table = _smoke("startup.py", lab, tmp_path / "startup.md")
    assert "| `oeagent --help` |" in table and "| `oeagent status` (enrolled host) |" in table
    assert "is imported by neither: **yes**" in table


def test_renewal_disruption_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    table = _smoke("renewal_disruption.py", lab, tmp_path / "renewal.md")
    assert "| 1 |" in table
    assert "window without a certificate: median " in table


def test_idle_cost_benchmark_smoke(lab: Lab, tmp_path: Path) -> None:
    # 5 s idle after the agent's first runs of renew, publish and discovery; 3 start-up rounds.
    table = _smoke("idle_cost.py", lab, tmp_path / "idle.md", timeout=240)
    assert "| resident memory (VmRSS) while idle, max of " in table
    assert "- target, resident memory under 60 MB: **" in table
    assert "- target, CPU well under 1 % of a core" in table
    assert "| `oeagent --help` |" in table and "| `oeagent status` (this enrolled host) |" in table
    assert "is imported by neither: **yes**" in table
