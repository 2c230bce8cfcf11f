"""The one exception root of oeagent and its few subclasses.

Every failure a user can cause or meet is an ``OeagentError``: the CLI prints its message as
one line and exits with ``exit_code`` (a traceback only with ``--debug``). Anything else that
escapes is a bug.
"""

from __future__ import annotations

import os

EX_SOFTWARE = 70
EX_CONFIG = 78  # sysexits.h: configuration error
EX_TEMPFAIL = 75  # sysexits.h: try again later (lock held)
EX_UNAVAILABLE = 69  # sysexits.h: a service we need is not there


class OeagentError(Exception):
    """Root of every error oeagent reports to its user."""

    exit_code: int = 1


class ConfigError(OeagentError):
    """The configuration is unusable. Carries every problem found, each with its key path."""

    exit_code = EX_CONFIG

    def __init__(self, problems: list[str], source: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        where = f" in {self.source}" if self.source else ""
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}{where}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class SecretError(ConfigError):
    """A secret file is missing, unreadable, malformed or readable by others."""


class LockError(OeagentError):
    """Another oeagent run holds the lock and did not release it in time."""

    exit_code = EX_TEMPFAIL


class StateError(OeagentError):
    """The state directory is unusable or holds something we cannot read."""


class AcmeError(OeagentError):
    """The ACME CA refused, failed or could not be reached.

    ``code`` is the ACME problem type's last part (``rateLimited``, ``alreadyReplaced``...) when
    the CA sent one; ``retry_after`` the seconds its Retry-After header asked us to wait.
    """

    exit_code = EX_UNAVAILABLE

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class ChallengeError(AcmeError):
    """A challenge could not be set up, answered or validated."""


class DnsUpdateError(OeagentError):
    """An RFC 2136 update was refused or could not be sent."""

    exit_code = EX_UNAVAILABLE


class NssError(OeagentError):
    """An NSS database operation (certutil, pk12util) failed."""


class NssLockedError(NssError):
    """Another process holds the NSS database locked: try again later (exit 75)."""

    exit_code = EX_TEMPFAIL


class PlutoError(OeagentError):
    """pluto could not be told about a change."""


class CommandError(OeagentError):
    """An external command failed; carries argv, exit status and stderr (never stdin)."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{argv[0]} exited with status {returncode}: {detail}")
