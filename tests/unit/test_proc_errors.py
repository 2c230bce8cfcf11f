"""``proc.run`` for a program that exists but cannot be run (a hook script without the
execute bit or without a #! line, a directory): one OeagentError naming it, so the other
hooks still run and the CLI never reports an internal error (PermissionError, OSError
ENOEXEC came out as exit 70)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oeagent import proc
from oeagent.errors import OeagentError


@pytest.mark.parametrize("kind", ["not executable", "no #! line", "directory"])
def test_a_program_that_cannot_be_run(tmp_path: Path, kind: str) -> None:
    program = tmp_path / "hook"
    if kind == "directory":
        program.mkdir()
    else:
        program.write_bytes(b"\x7fELF not really\n" if kind == "no #! line" else b"#!/bin/sh\n")
        program.chmod(0o644 if kind == "not executable" else 0o755)
    with pytest.raises(OeagentError, match=f"cannot run {program}"):
        proc.run([str(program)], check=False)
