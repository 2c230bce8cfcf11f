"""One handler per command: load the config, run the action, return its result document.

Each action's module is imported inside its handler, so a command pays only for its own
imports (``status`` never imports the ACME stack).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from oeagent.errors import OeagentError
from oeagent.report import Reporter

if TYPE_CHECKING:
    from oeagent.config import Config


def _load_config(args: argparse.Namespace) -> Config:
    from oeagent import config as config_module

    return config_module.load(config_module.config_path_from(args.config))


def _run_enroll(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    cfg = _load_config(args)  # a broken config fails before the ACME stack is imported
    from oeagent.enroll import enroll

    result = enroll(cfg, reporter, force=args.force, dry_run=args.dry_run)
    document = result.as_dict()
    if cfg.publish.enabled and not args.dry_run:
        from oeagent.publish.actions import publish_after_deploy

        document["publish"] = publish_after_deploy(
            cfg, reporter, what="enroll",
            enrolled_again=result.issued or bool(result.extra.get("enrolled_again")))
    return document


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


def _run_renew(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.renew import renew

    cfg = _load_config(args)
    result = renew(cfg, reporter, force=args.force, dry_run=args.dry_run)
    document = result.as_dict()
    if result.issued and cfg.publish.enabled and not args.dry_run:
        from oeagent.publish.actions import publish_after_deploy

        document["publish"] = publish_after_deploy(cfg, reporter, what="renew")
    return document


def _run_agent(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent import config as config_module
    from oeagent.agent import Agent

    path = config_module.config_path_from(args.config)
    return Agent(path, config_module.load(path), debug=bool(args.debug)).run()


def _run_status(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.status import NeedsAttention, collect, render_text

    report = collect(_load_config(args))
    if not args.json:
        reporter.write(render_text(report))
    if report["attention"]:
        raise NeedsAttention("; ".join(str(a) for a in report["attention"]), result=report)
    return report


def _run_install_units(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent import config as config_module
    from oeagent.units import install_units

    path = config_module.config_path_from(args.config)
    cfg = config_module.load(path)
    return install_units(cfg, path, args.directory, reporter, dry_run=args.dry_run)


def _run_discover(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from pathlib import Path

    from oeagent.discovery import discover, read_peer_file

    cfg = _load_config(args)
    peers = list(args.peers)
    if args.from_file:
        peers += read_peer_file(Path(args.from_file))
    if not peers:
        raise OeagentError("name at least one PEER, or --from-file FILE")
    # With --json each peer is one JSON line as its lookup finishes, then the summary object.
    return discover(cfg, peers, as_json_lines=bool(args.json))


def _run_policy(args: argparse.Namespace, reporter: Reporter) -> dict[str, object]:
    from oeagent.policy import apply

    return apply(_load_config(args), reporter, dry_run=args.dry_run)


ACTIONS: dict[str, Callable[[argparse.Namespace, Reporter], dict[str, object]]] = {
    "enroll": _run_enroll,
    "discover": _run_discover,
    "policy": _run_policy,
    "publish": _run_publish,
    "unenroll": _run_unenroll,
    "serve": _run_serve,
    "renew": _run_renew,
    "run": _run_agent,
    "status": _run_status,
    "install-units": _run_install_units,
}
