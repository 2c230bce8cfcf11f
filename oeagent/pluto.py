"""Telling a running pluto about changes, through its control socket and ``ipsec whack``.

pluto not running is normal (installed but stopped, or started later): it reads the NSS
database when it starts, so there is nothing to tell it and that is not an error.
"""

from __future__ import annotations

import logging
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oeagent import libreswan, proc
from oeagent.errors import PlutoError

log = logging.getLogger(__name__)

# What whack 4.x prints when nobody listens on the socket (exit status 33 in both cases).
_NOT_RUNNING = ("Pluto is not running", "Connection refused", "No such file or directory")


def is_running(ctlsocket: Path) -> bool:
    """Whether pluto's control socket is there (pluto may still be starting or have died
    without removing it: ``_whack`` tells those apart). Raises PlutoError for anything
    else at that path, so a wrong ``pluto.ctlsocket`` is said, not taken for "not running"
    and the new certificate or policy silently left unloaded."""
    try:
        mode = ctlsocket.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:  # a file where a directory should be, no permission
        raise PlutoError(f"cannot look at {ctlsocket} (pluto.ctlsocket): {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise PlutoError(f"{ctlsocket} is not a socket; is pluto.ctlsocket right?")
    return True


def reread_certs(ctlsocket: Path, timeout: float = 30.0, *, nickname: str | None = None,
                 ipsec_dir: Path | None = None, config: Path | None = None,
                 removed: bool = False) -> str | None:
    """Make pluto use the certificate now under ``nickname`` (or, with ``removed``, stop
    using the one that is gone).

    What pluto was told, as a phrase for the report ("reread its certificates" or "replaced
    conns ..."), or None when pluto is not running. Raises PlutoError when
    pluto runs but a reload failed (whack exits non-zero: e.g. status 27 "reloading
    leftcert='NICK' failed" when the nickname has no usable certificate and key).

    pluto 4.10 (Debian 12) dies with SIGSEGV on ``whack --rereadcerts`` while it holds both
    a conn with a certificate and instances of OE group conns (libreswan issue #1005: the
    reread walks every conn, instances without a host config included) -- that is, on every
    enrolled OE host. It also dies on it while an SA of a conn with the certificate is up
    (the renewal-disruption benchmark: 5 of 5 renewals, no OE groups involved). So when
    pluto holds group instances or such SAs, the conns that use ``nickname`` are replaced
    instead: deleted and added again, oeagent's own from ``ipsec_dir/oeagent.conf`` and the
    operator's from ``config`` (``pluto.config``, the ipsec.conf that includes them), then
    routed when on-demand or route, initiated when auto=start; with ``removed`` only deleted.
    pluto reads the certificate when a conn is added. Their SAs end; peers negotiate again
    on demand.
    """
    if not is_running(ctlsocket):
        log.info(
            "pluto is not running (no %s); it reads the certificates when it starts", ctlsocket
        )
        return None
    if nickname is not None:
        status = _whack(ctlsocket, ["--status"], timeout)
        if status is None:
            log.info("pluto is not running (%s)", ctlsocket)
            return None
        users = cert_conns(status, nickname)
        if users and (has_group_instances(status) or has_states(status, users)):
            _replace(ctlsocket, users, ipsec_dir, config, removed, timeout)
            # Said plainly: replacing ends these conns' SAs, a reread would not have; deleted
            # conns are not added again, so nobody negotiates them again.
            what = ("deleted the conns using it ({}; their SAs ended)" if removed else
                    "replaced the conns using it ({}; their SAs ended, peers negotiate again)")
            return (f"{what.format(', '.join(users))} instead of --rereadcerts, which crashes "
                    "pluto 4.10 with OE instances or SAs up")
    result = proc.run(
        libreswan.whack("--ctlsocket", str(ctlsocket), "--rereadcerts"),
        check=False,
        timeout=timeout,
    )
    output = (result.stdout + "\n" + result.stderr).strip()
    if result.returncode == 0:
        log.debug("pluto reread certificates: %s", output)
        return "told it to reread its certificates"
    if any(marker in output for marker in _NOT_RUNNING):
        log.info("pluto is not running (%s)", ctlsocket)
        return None
    detail = _last_line(output, f"exit status {result.returncode}")
    raise PlutoError(f"pluto failed to reload its certificates: {detail}")


def _last_line(output: str, fallback: str) -> str:
    """What a tool said last (its reason), or ``fallback`` when it said nothing."""
    lines = output.strip().splitlines()
    return lines[-1] if lines else fallback


def _whack(ctlsocket: Path, args: list[str], timeout: float) -> str | None:
    """``whack ARGS``'s output, or None when pluto is not running."""
    result = proc.run(libreswan.whack("--ctlsocket", str(ctlsocket), *args), check=False,
                      timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(marker in output for marker in _NOT_RUNNING):
        return None
    return output


def cert_conns(status: str, nickname: str) -> list[str]:
    """The conns (not instances) that ``whack --status`` shows with ``mycert=NICKNAME``."""
    found = re.findall(rf'^\d* ?"([^"\[#]+)":\s.*\bmycert={re.escape(nickname)};', status,
                       re.MULTILINE)
    return list(dict.fromkeys(found))


def has_states(status: str, conns: list[str]) -> bool:
    """Does pluto hold any IKE or IPsec SA (``#N: "CONN"...``) of one of ``conns``?"""
    return not libreswan.conns_with_states(status).isdisjoint(conns)


def has_group_instances(status: str) -> bool:
    """Does pluto hold instances of OE group conns (``"GROUP#CIDR"``)?"""
    return re.search(r'^\d* ?"[^"]+#[^"]+"', status, re.MULTILINE) is not None


def _replace(ctlsocket: Path, conns: list[str], ipsec_dir: Path | None,
             config: Path | None, removed: bool, timeout: float) -> None:
    from oeagent.policy.render import CONF, conn_blocks

    conf = ipsec_dir / CONF if ipsec_dir is not None else None
    blocks = conn_blocks(conf.read_text()) if conf is not None and conf.exists() else {}
    own = [c for c in conns if c in blocks]
    foreign = [c for c in conns if c not in blocks]
    operator = _Listed()
    if foreign and not removed:
        # Everything is checked before anything is deleted: a conn that cannot be added
        # again must not be dropped.
        operator = _listed(config, timeout) if config is not None else operator
        unknown = [c for c in foreign if c not in operator.all]
        if unknown:
            raise PlutoError(
                "pluto holds OE group instances or an SA of a conn using the certificate, and "
                "pluto 4.x crashes on `whack --rereadcerts` then (libreswan issue #1005), so "
                f"oeagent replaces those conns instead; {', '.join(unknown)} is in neither "
                f"{conf or CONF} nor pluto.config ({config or 'not given'}): set pluto.config "
                "to the ipsec.conf that defines it, or replace it yourself "
                f"(ipsec auto --replace {unknown[0]})")
    if removed:
        libreswan.whack_each(ctlsocket, ["--delete"], conns, timeout)
        log.info("pluto: deleted %s (their certificate is gone)", ", ".join(conns))
        return
    # No delete first: addconn replaces a conn (delete and add in one whack message). Until
    # a conn is routed again its enforce peer's traffic meets the oeagent-enforced drop.
    # Both sources are added even when one fails: an operator's conn must not stay deleted
    # because one of oeagent's was refused, nor the other way round.
    outputs: list[str] = []
    refused: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oeagent-reload-") as tmp:
        sources: list[tuple[Path, list[str]]] = []
        if own:
            wrapper = Path(tmp) / "ipsec.conf"
            wrapper.write_text(f"config setup\ninclude {conf}\n")
            sources.append((wrapper, own))
        if foreign:
            assert config is not None  # every foreign conn was found in it above
            sources.append((config, foreign))
        for source, names in sources:
            try:
                outputs.append(_addconn(ctlsocket, source, names, timeout))
            except PlutoError as exc:
                refused.append(str(exc))
    libreswan.whack_each(ctlsocket, ["--route"], [
        c for c in conns if (c in operator.route if c in foreign
                             else "auto=ondemand" in blocks[c].splitlines())], timeout)
    # As pluto does for auto=start when it loads the config; the SA comes when it can.
    libreswan.whack_each(ctlsocket, ["--initiate", "--asynchronous"],
                         [c for c in conns if c in operator.start], timeout)
    if refused:
        raise PlutoError("; ".join(refused))
    held = libreswan.held_conns(_whack(ctlsocket, ["--status"], timeout) or "")
    missing = [c for c in conns if c not in held]
    if missing:
        said = _last_line("\n".join(outputs), "see its log")
        raise PlutoError(f"pluto did not load {', '.join(missing)} again: {said}")
    log.info("pluto: replaced %s to load the new certificate", ", ".join(conns))


def _addconn(ctlsocket: Path, config: Path, conns: list[str], timeout: float) -> str:
    """``ipsec addconn`` the named conns from ``config`` into pluto; its output."""
    added = proc.run(libreswan.addconn("--ctlsocket", str(ctlsocket), "--config",
                      str(config), *conns), check=False, timeout=timeout)
    output = (added.stdout + added.stderr).strip()
    if added.returncode != 0:
        detail = _last_line(output, f"exit status {added.returncode}")
        raise PlutoError(f"pluto refused {', '.join(conns)} with the new certificate: {detail}")
    return output


@dataclass(frozen=True)
class _Listed:
    """The conns an ipsec.conf defines, and which of them pluto routes or starts."""

    all: frozenset[str] = frozenset()
    route: frozenset[str] = frozenset()
    start: frozenset[str] = frozenset()


def _listed(config: Path, timeout: float) -> _Listed:
    """Ask ``ipsec addconn`` (it follows include, also= and %default as pluto would)."""
    found: dict[str, frozenset[str]] = {}
    for which in ("all", "route", "start"):
        done = proc.run(libreswan.addconn("--config", str(config), f"--list{which}"),
                        check=False, timeout=timeout)
        if done.returncode != 0:
            said = _last_line(done.stdout + done.stderr, f"exit {done.returncode}")
            raise PlutoError(f"cannot read pluto.config {config}: {said}")
        found[which] = frozenset(done.stdout.split())
    return _Listed(found["all"], found["route"], found["start"])
