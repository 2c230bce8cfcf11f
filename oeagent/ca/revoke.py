"""Revoking the host's certificate at the ACME CA (RFC 8555 §7.6), for ``unenroll --revoke``.

Signed with the account key that ordered it (the account is found again, never created
anew for a revocation), with reason ``cessationOfOperation``: the host stopped doing OE with
this identity; nothing suggests the key was compromised.
"""

from __future__ import annotations

from acme import client as acme_client
from cryptography import x509

from oeagent.ca.account import ensure_account
from oeagent.ca.client import get_directory, make_network, translated
from oeagent.config import Config
from oeagent.report import Reporter
from oeagent.state import StateDir

CESSATION_OF_OPERATION = 5


def revoke_certificate(config: Config, state: StateDir, cert: x509.Certificate,
                       reporter: Reporter, reason: int = CESSATION_OF_OPERATION) -> None:
    net = make_network(config.acme)
    directory = get_directory(config.acme, net)
    client = acme_client.ClientV2(directory, net)
    ensure_account(config.acme, state, client, reporter)
    serial = format(cert.serial_number, "x")
    with translated(f"revoke certificate {serial}", directory["revokeCert"]):
        client.revoke(cert, reason)
    reporter.step("revoke", f"the CA revoked certificate {serial} (cessationOfOperation)",
                  serial=serial)
