"""Start-up stays light: ``oeagent --help`` and ``oeagent status`` do not import the ACME stack
(acme, josepy, requests, urllib3) nor dnspython; ``--help`` not even cryptography.

Each command runs in a fresh interpreter (sys.modules is per process), as the user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACME_STACK = ("acme", "josepy", "requests", "urllib3", "dns")

PROBE = """
import json, runpy, sys
sys.argv = ["oeagent", *sys.argv[1:]]
try:
    runpy.run_module("oeagent", run_name="__main__")
except SystemExit as exit:
    code = exit.code
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded_top_level_modules(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)
    line = proc.stdout.rsplit("\nMODULES ", 1)
    assert len(line) == 2, proc.stdout + proc.stderr
    return set(json.loads(line[1]))


def test_help_imports_neither_the_acme_stack_nor_cryptography() -> None:
    loaded = loaded_top_level_modules("--help")
    assert not loaded & {*ACME_STACK, "cryptography", "schedule"}


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_status_does_not_import_the_acme_stack(tmp_path: Path, extra: tuple[str, ...]) -> None:
    cfg = tmp_path / "oeagent.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[host]\nnames = ["a.example"]\n'
                   f'[nss]\ndatabase = "sql:{tmp_path}/nss"\n'
                   f'[pluto]\nctlsocket = "{tmp_path}/pluto.ctl"\n')
    loaded = loaded_top_level_modules("--config", str(cfg), "status", *extra)
    assert "oeagent" in loaded
    assert not loaded & set(ACME_STACK)
