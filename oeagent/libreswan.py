"""libreswan's programs (``whack``, ``addconn``), run directly instead of through ``ipsec``.

``ipsec whack ...`` is a shell script that works out libreswan's directories and then execs
``<directory>/whack``. The shell is ~2.5 ms a call, most of what a call costs: a policy
load routes each on-demand conn with its own whack, so at 1,000 peers that was 3.4 of
the 4.1 ms a conn took (measured in a network namespace with pluto 4.10, 2026-12-04). The
directory is asked of ``ipsec --directory`` once per process; where that does not answer
with a directory holding the program, the wrapper is used as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from oeagent import proc
from oeagent.errors import OeagentError


@functools.cache
def _program_directory() -> Path | None:
    try:
        done = proc.run(["ipsec", "--directory"], check=False, timeout=10)
    except OeagentError:  # not installed, or hung: the wrapper's own error will say so
        return None
    text = done.stdout.strip()
    if done.returncode != 0 or not text.startswith("/"):
        return None
    return Path(text)


def command(program: str) -> list[str]:
    """The argv prefix that runs libreswan's ``program``, e.g. ``["/usr/libexec/ipsec/whack"]``
    or, failing that, ``["ipsec", "whack"]``."""
    directory = _program_directory()
    if directory is not None:
        path = directory / program
        if path.is_file() and os.access(path, os.X_OK):
            return [str(path)]
    return ["ipsec", program]


def whack(*args: str) -> list[str]:
    return [*command("whack"), *args]


def addconn(*args: str) -> list[str]:
    return [*command("addconn"), *args]
