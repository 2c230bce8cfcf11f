"""``oeagent``'s argument parser: every command, its options and help, and nothing else.

Only the standard library is imported here, so ``oeagent --help`` stays cheap.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from oeagent import __version__


class UsageError(Exception):
    """A command line argparse refused; ``main`` reports it (also as JSON with --json)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is raised instead of printed and exited
    on: only ``main`` knows whether --json asked for one JSON object on stdout."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _given(text: str) -> str:
    """An option value that says something: "" (a script's unset variable) is refused,
    not taken as the current directory or as "use the default"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty")
    return text


def _port(text: str) -> int:
    """A TCP port for ``serve --port``; 0 asks the kernel for a free one (tests)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        # Out of range it reached bind() and came back as an internal error.
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


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
    parser = _Parser(
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
    discover.add_argument("--from-file", metavar="FILE", type=_given,
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
    serve.add_argument("--listen", metavar="ADDRESS", type=_given,
                       help="default: publish.wellknown.listen_address")
    serve.add_argument("--port", type=_port, help="default: publish.wellknown.port")
    _renewal_commands(commands)
    return parser


def _renewal_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    renew = commands.add_parser(
        "renew",
        help="renew the certificate if it is due (ARI or the lifetime rule) and deploy it",
        description=(
            "Renew the certificate when it is due (the CA's ARI window, else when a third of "
            "its lifetime remains, half for short-lived ones), with enroll's lock and deploy "
            "path, then run the post-deploy hooks. Exit 0 when nothing was due or the renewal "
            "succeeded, 75 while backing off after failures, non-zero when a step failed."
        ),
    )
    _global_options(renew, in_subcommand=True)
    renew.add_argument("--force", action="store_true", help="renew even if not due")
    renew.add_argument("--dry-run", action="store_true",
                       help="say whether renewal is due from local state; contact nobody")
    run = commands.add_parser(
        "run",
        help="the long-running agent: renews, keeps the advertisement and OE policy current",
        description=(
            "Run until SIGTERM/SIGINT: check renewal at the ARI/rule/backoff times (at least "
            "every renewal.check_interval), keep the advertisement published (when "
            "publish.backends is set), refresh discovered peers and re-apply the OE policy "
            "when a decision changes; reload the config on SIGHUP, notify systemd "
            "(Type=notify, watchdog), log one line per event to stderr."
        ),
    )
    _global_options(run, in_subcommand=True)
    status = commands.add_parser(
        "status",
        help="the certificate, its renewal schedule, NSS and pluto; exit 1 if it needs attention",
        description=(
            "Show the certificate (names, serial, issuer, expiry), when and why it renews next, "
            "the last success and failure, whether NSS holds exactly it and whether pluto has "
            "it loaded. Exit 0 when healthy, 1 when something needs attention."
        ),
    )
    _global_options(status, in_subcommand=True)
    units = commands.add_parser(
        "install-units",
        help="write the systemd units (agent, or renew timer) for this configuration",
        description=(
            "Write oeagent.service, oeagent-renew.service and oeagent-renew.timer with this "
            "oeagent's path, this config's state/NSS/ipsec directories and its secrets as "
            "LoadCredential=, then print the systemctl commands to enable one of them."
        ),
    )
    _global_options(units, in_subcommand=True)
    units.add_argument("--directory", metavar="DIR", default="/etc/systemd/system", type=_given,
                       help="where to write the units (default: /etc/systemd/system)")
    units.add_argument("--dry-run", action="store_true", help="print the units; write nothing")
