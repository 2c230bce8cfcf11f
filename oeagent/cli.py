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
from typing import TYPE_CHECKING

from oeagent import __version__
from oeagent.errors import EX_SOFTWARE, OeagentError
from oeagent.report import Reporter

if TYPE_CHECKING:
    from oeagent.config import Config

log = logging.getLogger("oeagent")

# Commands reserved in the interface that later work fills in; each says so when run.
_NOT_BUILT_YET = {
    "renew": "renew what is due (and --force); the long-running agent uses the same path",
    "run": "the long-running agent that renews, publishes and refreshes on a schedule",
    "status": "show what is enrolled, deployed and published, and when it renews",
    "discover": "find which peers advertise OE, trusting only DNSSEC or PKIX-validated HTTPS",
    "policy": "write libreswan's OE policy: authenticated where advertised, NULL elsewhere",
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

    publish = commands.add_parser(
        "publish",
        help="advertise OE support in DNSSEC records and a well-known HTTPS document",
        description=(
            "Derive the advertisement from the deployed certificate and key, bring every "
            "configured backend (publish.backends) in line with it, then verify from the "
            "outside: DNS through the validating resolver with the AD bit, the document "
            "over HTTPS."
        ),
    )
    _global_options(publish, in_subcommand=True)
    what = publish.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true",
                      help="print the plan as a diff; change nothing")
    what.add_argument("--verify", action="store_true",
                      help="only check what clients see; change nothing")

    unenroll = commands.add_parser(
        "unenroll",
        help="withdraw the advertisement (mode none), then optionally the identity",
        description=(
            "Withdraw the TLSA and IPSECKEY records at once and publish mode none (TXT and "
            "document) so caching clients release this host; run again after one max_age "
            "(or with --purge) to remove those markers too."
        ),
    )
    _global_options(unenroll, in_subcommand=True)
    unenroll.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    unenroll.add_argument("--purge", action="store_true",
                          help="remove the mode none markers now instead of after one max_age")
    unenroll.add_argument("--remove-nss", action="store_true",
                          help="also delete the certificate and key from the NSS database")
    unenroll.add_argument("--revoke", action="store_true",
                          help="also revoke the certificate at the CA (implies --remove-nss)")

    serve = commands.add_parser(
        "serve",
        help="serve /.well-known/oe-ipsec over HTTPS with the enrolled certificate",
        description=(
            "A small HTTPS responder for hosts without a web server: answers "
            "/.well-known/oe-ipsec with the document `oeagent publish` keeps current "
            "(publish.wellknown.mode = 'serve'). Runs until SIGTERM."
        ),
    )
    _global_options(serve, in_subcommand=True)
    serve.add_argument("--listen", metavar="ADDRESS",
                       help="default: publish.wellknown.listen_address")
    serve.add_argument("--port", type=int, help="default: publish.wellknown.port")

    for name, summary in _NOT_BUILT_YET.items():
        sub = commands.add_parser(name, help=f"{summary} (not built yet)", description=summary)
        _global_options(sub, in_subcommand=True)
        if name in ("renew", "policy"):
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

    result = enroll(cfg, reporter, force=args.force, dry_run=args.dry_run)
    document = result.as_dict()
    if cfg.publish.enabled and not args.dry_run:
        from oeagent.publish.actions import run_publish

        try:
            document["publish"] = run_publish(cfg, reporter, resume=result.issued)
        except OeagentError as exc:
            # Say that the certificate part worked; keep the failure's exit status.
            failure = type(exc)(f"enrolled, but publishing failed: {exc}")
            failure.exit_code = exc.exit_code
            raise failure from exc
    return document


def _load_config(args: argparse.Namespace) -> Config:
    from oeagent import config as config_module

    return config_module.load(config_module.config_path_from(args.config))


def _run_publish(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.publish.actions import run_publish

    return run_publish(_load_config(args), reporter, dry_run=args.dry_run,
                       verify_only=args.verify)


def _run_unenroll(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.publish.actions import run_unenroll

    return run_unenroll(_load_config(args), reporter, purge=args.purge, dry_run=args.dry_run,
                        remove_nss=args.remove_nss, revoke=args.revoke)


def _run_serve(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.publish.serve import serve

    return serve(_load_config(args), reporter, listen=args.listen, port=args.port)


_ACTIONS: dict[str, Callable[[argparse.Namespace, Reporter], dict[str, object]]] = {
    "enroll": _run_enroll,
    "publish": _run_publish,
    "unenroll": _run_unenroll,
    "serve": _run_serve,
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
