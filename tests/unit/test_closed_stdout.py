"""stdout closed early (``oeagent ... | head -1``): the action still completes -- an
enrollment must not stop halfway because nobody reads its account any more -- and the
command never reports an internal error (it did: BrokenPipeError, exit 70)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_with_stdout_closed(*args: str) -> subprocess.CompletedProcess[str]:
    # The venv's script: install-units writes the path of the oeagent it runs as.
    proc = subprocess.Popen([str(Path(sys.executable).parent / "oeagent"), *args], cwd=REPO,
                            text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has started: every write meets EPIPE
    with proc.stderr:
        err = proc.stderr.read()
    code = proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, code, "", err)


def test_the_action_completes_and_no_internal_error(tmp_path: Path) -> None:
    config = tmp_path / "oeagent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n')
    units = tmp_path / "units"
    started = time.monotonic()
    done = run_with_stdout_closed("--config", str(config), "install-units", "--directory",
                                  str(units))
    assert time.monotonic() - started < 60
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 70
    assert sorted(p.name for p in units.iterdir()) == [
        "oeagent-renew.service", "oeagent-renew.timer", "oeagent.service"]


def test_json_with_stdout_closed(tmp_path: Path) -> None:
    done = run_with_stdout_closed("--json", "--config", str(tmp_path / "missing.toml"),
                                  "status")
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 78
