"""What a command tells its user: a step-by-step account, as text or as one JSON object.

Actions call ``reporter.step(...)`` as they change or check things; the CLI chooses how the
account is rendered. Nothing secret is ever passed here.
"""

from __future__ import annotations

import io
import json
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

    def step(self, name: str, message: str, **data: Any) -> None:
        self.steps.append(Step(name, message, data))
        if not self.as_json:
            self.stream.write(f"[{name}] {message}\n")
            self.stream.flush()

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
            self.stream.write(json.dumps(document, default=str, sort_keys=False) + "\n")
            self.stream.flush()


class NullReporter(Reporter):
    """Discards the account; for library use and tests that do not look at it."""

    def __init__(self) -> None:
        super().__init__(as_json=False, stream=io.StringIO())
