"""libreswan's programs are run directly, not through the ``ipsec`` shell wrapper.

The wrapper's shell was most of what a ``whack`` cost; a policy load runs one per conn.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oeagent import libreswan
from oeagent.errors import OeagentError


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    libreswan._program_directory.cache_clear()
    yield
    libreswan._program_directory.cache_clear()


@pytest.mark.skipif(shutil.which("ipsec") is None, reason="libreswan is not installed")
def test_programs_are_found_where_ipsec_keeps_them() -> None:
    whack = libreswan.command("whack")
    directory = subprocess.run(["ipsec", "--directory"], capture_output=True, text=True,
                               check=True).stdout.strip()
    assert whack == [f"{directory}/whack"]
    assert os.access(whack[0], os.X_OK)
    assert libreswan.addconn("--checkconfig") == [f"{directory}/addconn", "--checkconfig"]


def test_the_wrapper_when_ipsec_does_not_say_where(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    answers: list[Any] = [
        subprocess.CompletedProcess([], 1, "", "unknown option"),
        subprocess.CompletedProcess([], 0, "not a path\n", ""),
        subprocess.CompletedProcess([], 0, f"{tmp_path}\n", ""),  # holds no whack
        OeagentError("ipsec is not installed (not found on PATH)"),
    ]

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["ipsec", "--directory"]
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    monkeypatch.setattr(libreswan.proc, "run", run)
    while answers:
        libreswan._program_directory.cache_clear()
        assert libreswan.whack("--status") == ["ipsec", "whack", "--status"]


def test_ipsec_is_asked_once_per_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "whack").write_text("#!/bin/sh\n")
    (tmp_path / "whack").chmod(0o755)
    calls = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"{tmp_path}\n", "")

    monkeypatch.setattr(libreswan.proc, "run", run)
    for _ in range(3):
        assert libreswan.command("whack") == [str(tmp_path / "whack")]
    assert len(calls) == 1
