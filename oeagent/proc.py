"""Run external programs safely: argument lists only, never a shell, a minimal environment.

Untrusted strings (names from config, DNS or HTTPS) may end up as arguments; they can never be
interpreted by a shell because none is involved, and the environment carries nothing of ours
(no secrets, no proxies) beyond what the tools need to run.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence

from oeagent.errors import CommandError, OeagentError

log = logging.getLogger(__name__)

_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every child gets: a fixed PATH and the C locale, plus ``extra``."""
    env = {"PATH": _SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    input_bytes: bytes | None = None,
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its result with text stdout/stderr.

    Raises CommandError for a non-zero exit when ``check`` is set, and OeagentError when the
    program is missing, cannot be run or times out. ``input_bytes`` is never logged.
    """
    args = [str(a) for a in argv]
    for arg in args:
        if "\x00" in arg:
            raise OeagentError(f"refusing to run {args[0]}: an argument contains a NUL byte")
    log.debug("running %s", args)
    try:
        completed = subprocess.run(
            args,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            env=minimal_env(env),
            check=False,
        )
    except FileNotFoundError as exc:
        raise OeagentError(f"{args[0]} is not installed (not found on PATH)") from exc
    except OSError as exc:  # there but not runnable: no execute bit, no #! line, a directory
        raise OeagentError(f"cannot run {args[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OeagentError(f"{args[0]} did not finish within {timeout:g} s") from exc
    result = subprocess.CompletedProcess(
        args,
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr or result.stdout)
    return result
