"""What a command tells its user: a step-by-step account, as text or as one JSON object.

Actions call ``reporter.step(...)`` as they change or check things; the CLI chooses how the
account is rendered. Nothing secret is ever passed here.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Step:
    name: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Collects steps; prints each as it happens in text mode, all at the end in JSON mode."""

    def __init__(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout
        self.steps: list[Step] = []
        self.reader_gone = False
        """stdout was closed (``oeagent enroll | head -1``): the rest is not shown."""

    def write(self, text: str) -> None:
        """Show ``text``. A reader that went away never stops the action: an enrollment
        must not end halfway because nobody reads its account any more."""
        if self.reader_gone:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.reader_gone = True
            silence(self.stream)

    def step(self, name: str, message: str, **data: Any) -> None:
        self.steps.append(Step(name, message, data))
        if not self.as_json:
            self.write(f"[{name}] {message}\n")

    def finish(
        self,
        command: str,
        ok: bool,
        error: str | None = None,
        exit_code: int = 0,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        if self.as_json:
            document = {
                "command": command,
                "ok": ok,
                "error": error,
                "exit_code": exit_code,
                "steps": [{"step": s.name, "message": s.message, **s.data} for s in self.steps],
                **(result or {}),
            }
            self.write(json.dumps(document, default=str, sort_keys=False) + "\n")


def silence(stream: TextIO) -> None:
    """Point a stream whose reader went away at /dev/null, so that what is still buffered,
    and the interpreter's last flush, go nowhere instead of raising BrokenPipeError again."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a StringIO in tests): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class NullReporter(Reporter):
    """Discards the account; for library use and tests that do not look at it."""

    def __init__(self) -> None:
        super().__init__(as_json=False, stream=io.StringIO())
