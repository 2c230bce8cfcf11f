"""Deploying a certificate: NSS database, trust anchors, verification, pluto, and the record.

Shared by ``enroll`` and (later) ``renew``: one path, one set of guarantees. The NSS swap
itself (rollback, no duplicate nicknames, crash recovery) lives in ``oeagent.nss``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from oeagent import pluto, trust
from oeagent.certstore import StoredCertificate
from oeagent.config import Config
from oeagent.errors import NssError
from oeagent.keys import PrivateKey
from oeagent.nss import NssDatabase
from oeagent.report import Reporter
from oeagent.state import StateDir


@dataclass(frozen=True)
class DeployResult:
    database: str
    nickname: str
    serial: str
    outcome: str
    """``installed`` (nickname was empty), ``replaced`` or ``unchanged``."""
    anchors_added: int
    pluto_notified: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def open_database(config: Config) -> NssDatabase:
    return NssDatabase(config.nss.database, config.nss.password_file)


def check_database_access(config: Config) -> None:
    """Fail before ordering if the NSS database cannot be opened with its key password.

    A wrong ``nss.password_file`` (or a database locked by another process) would otherwise be
    found only when deploying, after the CA had issued a certificate (counted against its
    limits) that then waits in the state directory. Listing the private keys needs the same
    login as the import, so it fails the same way, with the same message.
    """
    db = open_database(config)
    if db.exists():
        db.keys()


def recover_interrupted_swap(config: Config, state: StateDir, reporter: Reporter) -> None:
    """Finish or undo an NSS swap that a killed run left half-done."""
    db = open_database(config)
    if not db.exists():
        return
    outcome = db.recover(state.nss_work_dir)
    if outcome != "nothing":
        reporter.step(
            "recover",
            f"finished an interrupted NSS swap for '{config.nss.nickname}': {outcome}",
            outcome=outcome,
        )


def is_deployed(config: Config, state: StateDir, cert: StoredCertificate) -> bool:
    """True when the record says so AND NSS really holds exactly this cert, verifiable.

    Checking NSS itself (not only our record) lets a rerun repair a database that someone
    reset, or whose trust anchor went missing, instead of saying "nothing to do".
    """
    record = state.read_json(state.deployed_path) or {}
    if (
        record.get("database") != config.nss.database
        or record.get("nickname") != config.nss.nickname
        or record.get("serial") != cert.serial_hex
    ):
        return False
    db = open_database(config)
    if not db.exists():
        return False
    if db.fingerprints(config.nss.nickname) != [cert.fingerprint_sha256]:
        return False
    try:
        db.verify(config.nss.nickname)
    except NssError:
        return False
    return True


def deploy_to_nss(
    config: Config, state: StateDir, cert: StoredCertificate, key: PrivateKey, reporter: Reporter
) -> DeployResult:
    db = open_database(config)
    if db.ensure_exists():
        reporter.step("nss", f"created NSS database {config.nss.database}")
    # Read once for the anchors and the swap; read again only after an anchor changed it.
    contents = db.contents()
    added = 0
    for anchor in trust.load_anchors(config.nss.trust_anchors):
        if db.add_trust_anchor(anchor, contents=contents):
            added += 1
            reporter.step("nss", f"trusted anchor {anchor.subject.rfc4514_string()} (CT,,)")
            contents = db.contents()
    outcome = db.install_identity(
        config.nss.nickname, key, cert.cert, cert.chain, state.nss_work_dir, contents=contents
    )
    where = f"'{config.nss.nickname}' in {config.nss.database}"
    window = (
        f" (nickname empty for {outcome.swap_window * 1000:.0f} ms)" if outcome.swap_window else ""
    )
    reporter.step(
        "nss",
        f"certificate {cert.serial_hex} {outcome.status} as {where}{window}",
        outcome=outcome.status,
        swap_window_seconds=outcome.swap_window,
    )
    if not outcome.verified:  # the swap's own check ran certutil -V after its last change
        db.verify(config.nss.nickname)
    reporter.step(
        "verify", f"certutil -V -u V accepts '{config.nss.nickname}': chains to a trusted anchor"
    )
    state.write_json(
        state.deployed_path,
        {
            "database": config.nss.database,
            "nickname": config.nss.nickname,
            "serial": cert.serial_hex,
            "fingerprint_sha256": cert.fingerprint_sha256,
            "not_after": cert.not_after.isoformat(),
            "deployed_at": dt.datetime.now(dt.UTC).isoformat(),
        },
    )
    notified = pluto.reread_certs(config.pluto.ctlsocket, nickname=config.nss.nickname,
                                  ipsec_dir=config.pluto.ipsec_dir, config=config.pluto.config)
    reporter.step(
        "pluto",
        f"pluto: {notified}"
        if notified
        else "pluto is not running; it will load the certificate when it starts",
        pluto_running=notified is not None,
    )
    return DeployResult(
        config.nss.database, config.nss.nickname, cert.serial_hex, outcome.status, added,
        notified is not None,
    )
