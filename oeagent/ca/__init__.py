"""The ACME adapter: get a certificate for this host from an RFC 8555 CA.

    issue_certificate(config, state, cert_key, reporter) -> IssuedCertificate

Flow: directory -> account (reuse / find again / register) -> CSR -> order (profile) ->
set up challenges -> answer -> poll authorizations -> clean up -> finalize -> poll order ->
download -> parse. Modules: ``client`` (HTTPS trust, error translation), ``account``,
``order``, ``polling``, ``http01``, ``dns01`` (which uses ``oeagent.dnsupdate``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from acme import client as acme_client
from acme import crypto_util
from cryptography import x509

from oeagent.ca import order
from oeagent.ca.account import ensure_account
from oeagent.ca.client import get_directory, make_network, translated
from oeagent.config import Config
from oeagent.errors import AcmeError
from oeagent.keys import PrivateKey, key_to_pem, same_key
from oeagent.report import Reporter
from oeagent.state import StateDir

__all__ = ["IssuedCertificate", "issue_certificate", "parse_chain"]


@dataclass(frozen=True)
class IssuedCertificate:
    cert: x509.Certificate
    """The leaf."""
    chain: tuple[x509.Certificate, ...]
    """Intermediates, leaf excluded, in order (each signs the one before)."""
    fullchain_pem: bytes


def parse_chain(fullchain_pem: bytes, cert_key: PrivateKey) -> IssuedCertificate:
    try:
        certs = x509.load_pem_x509_certificates(fullchain_pem)
    except ValueError as exc:
        raise AcmeError(f"the CA sent a certificate chain that cannot be parsed: {exc}") from None
    if not same_key(certs[0], cert_key):
        raise AcmeError("the CA issued a certificate for a different key than the CSR's")
    return IssuedCertificate(certs[0], tuple(certs[1:]), fullchain_pem)


def make_csr(config: Config, cert_key: PrivateKey) -> bytes:
    addresses = [ipaddress.ip_address(a) for a in config.host.addresses]
    return crypto_util.make_csr(key_to_pem(cert_key), domains=list(config.host.names),
                                ipaddrs=addresses or None)


def issue_certificate(config: Config, state: StateDir, cert_key: PrivateKey,
                      reporter: Reporter) -> IssuedCertificate:
    """Run one ACME order for config.host.names + addresses with ``cert_key``.

    Raises AcmeError (ChallengeError for validation problems, DnsUpdateError for dns-01
    publishing problems) with a one-line message; never leaves challenge files, responders
    or TXT records behind.
    """
    acme = config.acme
    net = make_network(acme)
    directory = get_directory(acme, net)
    client = acme_client.ClientV2(directory, net)
    account = ensure_account(acme, state, client, reporter)
    profile = order.choose_profile(acme.profile, directory, reporter)

    identifiers = [*config.host.names, *config.host.addresses]
    with translated(f"create an order for {', '.join(identifiers)}", directory["newOrder"]):
        orderr = client.new_order(make_csr(config, cert_key), profile=profile)
    deadline = order.order_deadline(acme.order_timeout)
    reporter.step("order", f"order created for {', '.join(identifiers)}", order=orderr.uri,
                  identifiers=identifiers, profile=profile)

    tasks = order.tasks_for(orderr, config.challenge.type, account.key)
    if tasks:
        with order.challenge_setup(config.challenge, tasks, reporter):
            order.answer_and_wait(client, tasks, deadline, reporter, config.challenge.type)
    else:
        reporter.step("validated", "every identifier is already authorized (reused)")

    fullchain = order.finalize_and_download(client, orderr, deadline, reporter)
    issued = parse_chain(fullchain.encode("ascii"), cert_key)
    reporter.step("issued", "certificate issued", serial=f"{issued.cert.serial_number:x}",
                  not_after=issued.cert.not_valid_after_utc.isoformat(),
                  chain_length=len(issued.chain))
    return issued
