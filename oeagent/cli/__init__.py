"""The ``oeagent`` command line: parse arguments, run one action, report.

This package only wires things together: ``parser`` defines the commands and options,
``commands`` maps each command to its action (imported lazily, so ``oeagent --help`` and
``oeagent status`` never pay for importing the ACME stack), and ``main`` here maps the
outcome to the report and an exit status: an OeagentError is one line and its exit code,
anything else an internal error (70), tracebacks only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence

from oeagent.cli.commands import ACTIONS
from oeagent.cli.parser import UsageError, build_parser
from oeagent.errors import EX_SOFTWARE, OeagentError
from oeagent.report import Reporter, silence

__all__ = ["build_parser", "main"]

EX_USAGE = 2  # what argparse exits with; scripts and tests already expect it
EX_PIPE = 141  # a shell's status for a process killed by SIGPIPE


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        # urllib3 and the acme library log at INFO/DEBUG; keep them out of normal output.
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        logging.getLogger("acme").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        words = list(sys.argv[1:] if argv is None else argv)
        if "--json" in words:  # parsing failed, so this is the best reading of the request
            named = next((word for word in words if word in ACTIONS), "")
            Reporter(as_json=True).finish(named, ok=False, error=exc.message,
                                          exit_code=EX_USAGE)
        raise SystemExit(EX_USAGE) from None
    _configure_logging(bool(args.debug))
    reporter = Reporter(as_json=bool(args.json))
    command: str = args.command

    action = ACTIONS[command]
    try:
        result = action(args, reporter)
    except OeagentError as exc:
        if args.debug:
            traceback.print_exc()
        # Some failures come with a result worth showing (a hook failed after a good deploy).
        partial = getattr(exc, "result", None)
        reporter.finish(command, ok=False, error=str(exc), exit_code=exc.exit_code,
                        result=partial if isinstance(partial, dict) else None)
        if not args.json:
            print(f"oeagent {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"oeagent {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed under a command that writes its rows itself (discover): stop, as a
        # pipeline member killed by SIGPIPE would (128 + 13), without an internal error.
        silence(sys.stdout)
        return EX_PIPE
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, reported as one line
        if args.debug:
            traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
        reporter.finish(command, ok=False, error=message, exit_code=EX_SOFTWARE)
        if not args.json:
            print(f"oeagent {command}: {message}", file=sys.stderr)
        return EX_SOFTWARE
    reporter.finish(command, ok=True, result=result)
    return 0
