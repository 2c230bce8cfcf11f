"""``oeagent policy``: write libreswan's OE policy and load it, or show the diff.

Flow: desired policy (config + discovery cache + enrollment) -> own checks (groups, NSS
nicknames) -> render from templates -> ``addconn --checkconfig`` -> diff -> (dry run stops
here) -> back up the current files -> install atomically -> reload pluto -> on refusal or
timeout, restore the backup and load it again. Files already right: ask pluto whether it
runs them (a killed or failed earlier run) and load what it lacks or holds stale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

from oeagent import names, pluto, proc
from oeagent.config import Config
from oeagent.discovery.cache import PeerCache
from oeagent.errors import OeagentError
from oeagent.nss import NssDatabase
from oeagent.policy import install, model, render
from oeagent.policy.install import PolicyError
from oeagent.report import Reporter
from oeagent.resolver import Resolver, query
from oeagent.state import StateDir

__all__ = ["PolicyError", "apply", "desired", "refresh"]


def _enrolled(cfg: Config, state: StateDir) -> model.Responder | None:
    record = state.read_json(state.deployed_path) or {}
    if record.get("database") != cfg.nss.database or record.get("nickname") != cfg.nss.nickname:
        return None
    auth = "ecdsa" if cfg.key.algorithm.startswith("ecdsa") else "rsasig"
    return model.Responder(cfg.host.names[0], cfg.nss.nickname, auth)


def _never_locked_out(cfg: Config, notes: list[str]) -> list[str]:
    """Addresses that must stay reachable in clear: every DNS server and resolver oeagent is
    configured to use (discovery's resolver, the dns-01 primary, the publishing primary and
    the resolver that verifies it), the host's own name servers and the ACME CA. Loopback
    needs no exception."""
    addresses = [cfg.discovery.resolver, cfg.challenge.dns.server, cfg.publish.dns.server,
                 cfg.publish.resolver, *model.resolv_conf_servers()]
    # Without its trailing dot, if it has one: the lookup below adds the root's.
    host = (urllib.parse.urlsplit(cfg.acme.directory).hostname or "").rstrip(".")
    try:
        addresses.append(names.normalize_ip(host))
    except ValueError:
        resolver = Resolver(cfg.discovery.resolver, cfg.discovery.resolver_port,
                            cfg.discovery.dns_timeout, cfg.discovery.resolver_trusted)
        found = False
        for rdtype in ("A", "AAAA"):
            answer = query(resolver, f"{host}.", rdtype)
            for rdata in answer.rrset or []:
                addresses.append(names.normalize_ip(rdata.address))
                found = True
        if not found:
            notes.append(f"could not resolve the ACME CA {host}; add it to policy.clear")
    return [a for a in dict.fromkeys(addresses) if not ipaddress.ip_address(a).is_loopback]


def _has_ipv6_default_route() -> bool:
    """IPv6 conns need ``%defaultroute`` to resolve to an IPv6 address (checked where oeagent
    runs, which must be pluto's network namespace)."""
    result = proc.run(["ip", "-6", "route", "show", "default"], check=False)
    return result.returncode == 0 and bool(result.stdout.strip())


def desired(cfg: Config, state: StateDir, now: dt.datetime) -> model.Policy:
    """The policy for now; the caller holds the state lock (the cache is read)."""
    notes: list[str] = []
    responder = _enrolled(cfg, state) if cfg.policy.responder else None
    decisions = PeerCache(state).decisions(now)
    policy = model.build(
        null_ranges=cfg.policy.private_or_clear, clear=cfg.policy.clear,
        block=cfg.policy.block, never_locked_out=_never_locked_out(cfg, notes),
        decisions=decisions,
        static_peers=[(p.fqdn, p.address, p.auth, p.mode) for p in cfg.policy.peers],
        responder=responder, ipv6=_has_ipv6_default_route(),
        peer_updown=cfg.policy.peer_updown,
    )
    policy.notes[:0] = notes
    return policy


def check(cfg: Config, policy: model.Policy) -> None:
    """oeagent's own checks, for what addconn does not notice."""
    problems = model.group_conflicts(policy.groups)
    if policy.responder is not None:
        db = NssDatabase(cfg.nss.database, cfg.nss.password_file)
        if not db.exists() or not db.certificates(policy.responder.nickname):
            problems.append(f"leftcert={policy.responder.nickname} is not in {cfg.nss.database}")
    if problems:
        raise PolicyError("the policy fails oeagent's checks: " + "; ".join(problems))


def apply(cfg: Config, reporter: Reporter, *, dry_run: bool = False,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """Write and load the policy (or, with ``dry_run``, show the diff).

    Takes the state lock for the whole run, so two runs never interleave their installs and
    rollbacks; do not call it while holding that lock.
    """
    now = now or dt.datetime.now(dt.UTC)
    state = StateDir(cfg.state_dir)
    if dry_run and not state.root.exists():
        # Nothing to read under a lock, and a dry run must not create the state directory.
        return _apply(cfg, state, reporter, dry_run, now)
    with state.lock(cfg.lock_timeout):
        if not dry_run:
            # Temp files of a killed run (state directory, and ours in the ipsec directory):
            # they never replaced a real file.
            ipsec_dir = cfg.pluto.ipsec_dir
            stale = [*state.remove_stale_temp_files(), *install.remove_stale_temp_files(ipsec_dir)]
            for path in stale:
                reporter.step("recover", f"removed {path.name}, left by an interrupted run")
        return _apply(cfg, state, reporter, dry_run, now)


def _apply(cfg: Config, state: StateDir, reporter: Reporter, dry_run: bool,
           now: dt.datetime) -> dict[str, Any]:
    policy = desired(cfg, state, now)
    for note in policy.notes:
        reporter.step("note", note)
    check(cfg, policy)
    files = render.render(policy, now)
    install.checkconfig(files)
    ipsec_dir = cfg.pluto.ipsec_dir
    # Group files of ours that the new policy no longer has (e.g. IPv6 went away) go too.
    stale = sorted(f"policies/{f.name}" for f in (ipsec_dir / "policies").glob("oeagent-*")
                   if f"policies/{f.name}" not in files)
    target: dict[str, str | None] = {**files, **dict.fromkeys(stale)}
    current = install.read_current(ipsec_dir, list(target))
    # The generation time changes every run; compare without it to decide "unchanged".
    changed = _strip(current) != _strip(target)
    summary = {
        "peers": [p.fqdn + "=" + p.address + ":" + p.mode for p in policy.peers],
        "responder": policy.responder is not None, "changed": changed,
        "groups": {g: len(c) for g, c in policy.groups.items()},
    }
    reporter.step("check", "addconn --checkconfig and oeagent's checks passed")
    if dry_run:
        text = install.diff(current, target) if changed else ""
        reporter.step("diff", text or "no change", diff=text)
        return {**summary, "dry_run": True, "diff": text}
    running = pluto.is_running(cfg.pluto.ctlsocket)
    record = state.read_json(_loaded_path(state))
    held = _held(record, current)
    if not changed:
        if running:
            return _converge(cfg, state, reporter, held, target, summary)
        reporter.step("policy", f"{ipsec_dir} already holds this policy; nothing to do")
        return summary
    if running and record is None:
        # What pluto holds must be on record before the files change: a run killed between
        # writing and loading leaves the record behind, and the next run loads the difference.
        _remember(state, held)
    backup_dir = state.root / "policy-backup"
    state.write_json(backup_dir / "files.json", {"files": current})
    try:
        install.write_files(ipsec_dir, target)
    except OSError as exc:
        # A full or read-only ipsec directory: put back what was already replaced (each
        # write is atomic, so every file is whole, old or new) and say what failed.
        with contextlib.suppress(OSError):
            install.write_files(ipsec_dir, current)
        where = f" ({exc.filename})" if exc.filename else ""
        raise PolicyError(f"cannot write the policy into {ipsec_dir}: {exc.strerror}{where}; "
                          "the previous policy files are kept") from None
    removed = f"; removed {', '.join(stale)}" if stale else ""
    reporter.step("install", f"wrote {', '.join(sorted(files))} under {ipsec_dir}{removed}")
    if not running:
        _remember(state, target)  # pluto reads these files when it starts
        reporter.step("pluto", "pluto is not running; it loads the policy when it starts")
        return summary
    try:
        install.load(cfg.pluto.ctlsocket, ipsec_dir, held.get(render.CONF), files[render.CONF])
    except OeagentError as refused:
        # Refused by pluto, or a timeout (proc.run raises a plain OeagentError): either way
        # the previous files go back and are loaded again.
        _restore(cfg, state, current, files[render.CONF], refused)
    _remember(state, target)
    reporter.step("pluto", "pluto loaded the new conns and reread the groups")
    return summary


def _restore(cfg: Config, state: StateDir, current: dict[str, str | None], tried: str,
             refused: OeagentError) -> NoReturn:
    ipsec_dir = cfg.pluto.ipsec_dir
    try:
        install.write_files(ipsec_dir, current)
    except OSError as exc:
        _remember(state, {})  # pluto's state is unknown: the next run reloads every conn
        raise PolicyError(f"{refused}; restoring the previous policy files failed too: "
                          f"{exc.strerror} ({exc.filename})") from None
    try:
        install.load(cfg.pluto.ctlsocket, ipsec_dir, tried, current.get(render.CONF))
    except OeagentError as again:
        _remember(state, {})
        raise PolicyError(f"{refused}; the previous policy files are restored, but loading "
                          f"them failed too: {again}") from None
    _remember(state, current)
    raise PolicyError(f"{refused}; the previous policy is restored and loaded") from None


def _converge(cfg: Config, state: StateDir, reporter: Reporter,
              held: dict[str, str | None], target: dict[str, str | None],
              summary: dict[str, Any]) -> dict[str, Any]:
    """The files are already right; make sure pluto runs them too. A run killed between
    writing the files and loading them, or one whose load failed half-way, left pluto with
    conns missing or stale while the files on disk look done."""
    ipsec_dir = cfg.pluto.ipsec_dir
    lacking = install.missing(cfg.pluto.ctlsocket, render.conn_names(target[render.CONF]))
    if not lacking and _strip(held) == _strip(target):
        reporter.step("policy", f"{ipsec_dir} already holds this policy and pluto runs it; "
                      "nothing to do")
        return summary
    why = (f"pluto lacks {', '.join(lacking)}" if lacking
           else "pluto was not brought to the installed policy (an interrupted run)")
    try:
        install.load(cfg.pluto.ctlsocket, ipsec_dir, held.get(render.CONF), target[render.CONF])
    except OeagentError as exc:
        _remember(state, {})
        raise PolicyError(f"{why}; loading the installed policy failed: {exc}") from None
    _remember(state, target)
    reporter.step("pluto", f"{why}: loaded the installed policy")
    return {**summary, "reloaded": True}


def _loaded_path(state: StateDir) -> Path:
    return state.root / "policy-backup" / "loaded.json"


def _held(record: dict[str, Any] | None, current: dict[str, str | None]
          ) -> dict[str, str | None]:
    """The policy files pluto was last brought to (``record``, loaded.json: written after
    every load), else the files on disk. An empty record means unknown: every conn is
    reloaded."""
    files = record.get("files") if record else None
    if isinstance(files, dict) and all(isinstance(v, str | None) for v in files.values()):
        return files
    return current


def _remember(state: StateDir, files: dict[str, str | None]) -> None:
    state.write_json(_loaded_path(state), {"files": files})


def _strip(files: dict[str, str] | dict[str, str | None]) -> dict[str, str | None]:
    return {name: (text.split("\n", 1)[1] if name == render.CONF and text else text)
            for name, text in files.items()}


def refresh(cfg: Config, reporter: Reporter, now: dt.datetime | None = None) -> bool:
    """For ``oeagent run``: refresh the peers that are due and, when a peer's decision differs
    from the one the installed policy was rendered from (a lookup changed it, a held
    advertisement expired, a one-shot ``discover`` ran) or the policy file is not the one
    this function last recorded (a one-shot ``oeagent policy`` wrote it), re-apply the policy
    and record what it was rendered from -- only where ``oeagent policy`` installed one
    before, so the agent never writes into the ipsec directory on its own initiative.
    Returns whether the installed policy changed (apply found something to write and load)."""
    import hashlib

    from oeagent.discovery import (
        installed_keys,
        installed_policy,
        record_installed,
        refresh_due_peers,
    )

    def digest() -> str | None:
        with contextlib.suppress(FileNotFoundError):
            return hashlib.sha256((cfg.pluto.ipsec_dir / render.CONF).read_bytes()).hexdigest()
        return None

    now = now or dt.datetime.now(dt.UTC)
    changed = refresh_due_peers(cfg, now)
    current = digest()
    if current is None or (not changed and current == installed_policy(cfg)):
        return False
    keys = installed_keys(cfg, now)  # before rendering: a later change is then seen next time
    summary = apply(cfg, reporter, now=now)
    record_installed(cfg, keys, digest())
    return bool(summary["changed"])
