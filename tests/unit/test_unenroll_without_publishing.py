"""``unenroll --remove-nss`` on a host that does not publish: nothing to withdraw, so the
identity is removed (commit 40b22e7 meant this and passed the condition the wrong way round;
main fixed the condition in bdad186, this checks it through the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def unenroll(tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    config = tmp_path / "oeagent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n'
        f'nss.database = "sql:{tmp_path / "nss"}"\n'
        f'[pluto]\nipsec_dir = "{tmp_path / "ipsec.d"}"\nctlsocket = "{tmp_path / "pluto.ctl"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", "unenroll", *args],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def test_remove_nss_without_publishing_removes_the_identity(tmp_path: Path) -> None:
    code, document = unenroll(tmp_path, "--remove-nss", "--dry-run")
    assert code == 0, document
    messages = [step["message"] for step in document["steps"]]  # type: ignore[attr-defined]
    assert any("would delete 'oeagent'" in m for m in messages), messages
    code, document = unenroll(tmp_path, "--remove-nss")
    assert code == 0, document
    assert document["nss_removed"] == 0

