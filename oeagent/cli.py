"""The ``oeagent`` command line: parse arguments, load config, run one action, report.

This module only wires things together. Actions live in their own modules and are imported
lazily, so ``oeagent --help`` and ``oeagent status`` never pay for importing the ACME stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from oeagent import __version__
from oeagent.errors import EX_SOFTWARE, OeagentError
from oeagent.report import Reporter

log = logging.getLogger("oeagent")

# Commands reserved in the interface that later work fills in; each says so when run.
_NOT_BUILT_YET = {
    "renew": "renew what is due (and --force); the long-running agent uses the same path",
    "run": "the long-running agent that renews, publishes and refreshes on a schedule",
    "status": "show what is enrolled, deployed and published, and when it renews",
    "publish": "advertise OE support in DNSSEC records and a well-known HTTPS document",
    "unenroll": "withdraw advertisements, then remove the identity from NSS",
}

EX_NOT_IMPLEMENTED = 3


def _global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # Accept the global options before or after the subcommand. In the subcommand parsers the
    # defaults are suppressed so they do not overwrite a value given before the subcommand.
    default: object = argparse.SUPPRESS if in_subcommand else None
    flag_default: object = argparse.SUPPRESS if in_subcommand else False
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="configuration file (default: $OEAGENT_CONFIG or /etc/oeagent/oeagent.toml)",
    )
    group.add_argument(
        "--json", action="store_true", default=flag_default, help="print one JSON object"
    )
    group.add_argument(
        "--debug", action="store_true", default=flag_default, help="log details; tracebacks"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oeagent",
        description="Opportunistic IPsec enrollment agent for libreswan.",
    )
    parser.add_argument("--version", action="version", version=f"oeagent {__version__}")
    _global_options(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    enroll = commands.add_parser(
        "enroll",
        help="obtain a certificate from the ACME CA and load it into libreswan's NSS database",
        description=(
            "Obtain a certificate for the configured names from the ACME CA, load key, "
            "certificate and chain into libreswan's NSS database with the trust anchors pluto "
            "needs, and tell pluto. Does nothing when a valid certificate is deployed and not "
            "due for renewal."
        ),
    )
    _global_options(enroll, in_subcommand=True)
    enroll.add_argument("--force", action="store_true", help="issue a new certificate anyway")
    enroll.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be done; contact nobody, change nothing",
    )

    discover = commands.add_parser(
        "discover",
        help="find which peers advertise OE, trusting only DNSSEC or PKIX-validated HTTPS",
        description=(
            "Look peers up (signed DNS records, then https://NAME/.well-known/oe-ipsec), "
            "classify each as authenticated, none, bogus, unreachable or invalid, and hold "
            "peers to unexpired enforce advertisements. Results are kept in the state directory."
        ),
    )
    _global_options(discover, in_subcommand=True)
    discover.add_argument("peers", nargs="*", metavar="PEER", help="host name or IP address")
    discover.add_argument("--from-file", metavar="FILE",
                          help="names or IPs, one a line ('#' comments); looked up concurrently")

    policy = commands.add_parser(
        "policy",
        help="write libreswan's OE policy: authenticated where advertised, NULL elsewhere",
        description=(
            "Render oeagent.conf and the oeagent-* group files into the ipsec directory, "
            "validate them, install atomically and reload pluto; restore the old files if "
            "pluto refuses them."
        ),
    )
    _global_options(policy, in_subcommand=True)
    policy.add_argument("--dry-run", action="store_true", help="print the diff; change nothing")

    for name, summary in _NOT_BUILT_YET.items():
        sub = commands.add_parser(name, help=f"{summary} (not built yet)", description=summary)
        _global_options(sub, in_subcommand=True)
        if name in ("renew", "publish", "unenroll"):
            sub.add_argument("--dry-run", action="store_true", help="change nothing")
        if name == "renew":
            sub.add_argument("--force", action="store_true", help="renew even if not due")
    return parser


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


def _run_enroll(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent import config as config_module

    cfg = config_module.load(config_module.config_path_from(args.config))
    from oeagent.enroll import enroll

    return enroll(cfg, reporter, force=args.force, dry_run=args.dry_run).as_dict()


def _run_discover(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from pathlib import Path

    from oeagent import config as config_module
    from oeagent.discovery import discover, read_peer_file

    cfg = config_module.load(config_module.config_path_from(args.config))
    peers = list(args.peers)
    if args.from_file:
        peers += read_peer_file(Path(args.from_file))
    if not peers:
        from oeagent.errors import OeagentError

        raise OeagentError("name at least one PEER, or --from-file FILE")
    # With --json every peer is one JSON line as soon as the batch is done, then the summary.
    return discover(cfg, peers, as_json_lines=bool(args.json))


def _run_policy(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent import config as config_module
    from oeagent.policy import apply

    cfg = config_module.load(config_module.config_path_from(args.config))
    return apply(cfg, reporter, dry_run=args.dry_run)


_ACTIONS: dict[str, Callable[[argparse.Namespace, Reporter], dict[str, object]]] = {
    "enroll": _run_enroll,
    "discover": _run_discover,
    "policy": _run_policy,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(bool(args.debug))
    reporter = Reporter(as_json=bool(args.json))
    command: str = args.command

    action = _ACTIONS.get(command)
    if action is None:
        message = f"'oeagent {command}' is not built yet: {_NOT_BUILT_YET[command]}"
        reporter.finish(command, ok=False, error=message, exit_code=EX_NOT_IMPLEMENTED)
        if not args.json:
            print(f"oeagent: {message}", file=sys.stderr)
        return EX_NOT_IMPLEMENTED

    try:
        result = action(args, reporter)
    except OeagentError as exc:
        if args.debug:
            traceback.print_exc()
        reporter.finish(command, ok=False, error=str(exc), exit_code=exc.exit_code)
        if not args.json:
            print(f"oeagent {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"oeagent {command}: interrupted", file=sys.stderr)
        return 130
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
