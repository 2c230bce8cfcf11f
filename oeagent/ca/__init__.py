"""The ACME adapter: get a certificate for this host from an RFC 8555 CA.

    issue_certificate(config, state, cert_key, reporter) -> IssuedCertificate

Flow: directory -> account (reuse / find again / register) -> CSR -> order (profile) ->
set up challenges -> answer -> poll authorizations -> clean up -> finalize -> poll order ->
download -> parse. Modules: ``client`` (HTTPS trust, error translation), ``account``,
``order``, ``polling``, ``http01``, ``dns01`` (which uses ``oeagent.dnsupdate``), ``ari``
(renewalInfo, ``replaces`` on newOrder) and ``revoke`` (for ``unenroll --revoke``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from acme import crypto_util, messages
from cryptography import x509

from oeagent.ca import order
from oeagent.ca.account import ensure_account
from oeagent.ca.ari import AriClient, RenewalInfo, cert_id
from oeagent.ca.client import get_directory, make_network, translated
from oeagent.config import Config
from oeagent.errors import AcmeError
from oeagent.keys import PrivateKey, key_to_pem, same_key
from oeagent.report import Reporter
from oeagent.state import StateDir

__all__ = ["IssuedCertificate", "RenewalInfo", "cert_id", "fetch_renewal_info",
           "issue_certificate", "parse_chain"]


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


def order_replacing(client: AriClient, csr: bytes, profile: str | None, replaces: str | None,
                    action: str, reporter: Reporter) -> tuple[messages.OrderResource, str | None]:
    """newOrder with ``replaces``; if the CA answers ``alreadyReplaced`` (another order already
    claimed that certificate, RFC 9773 §5), once more without it. Returns what was sent."""
    url = client.directory["newOrder"]
    try:
        with translated(action, url):
            return client.new_order(csr, profile=profile, replaces=replaces), replaces
    except AcmeError as exc:
        if exc.code != "alreadyReplaced" or not replaces:
            raise
    reporter.step("order", f"the CA says {replaces} was already replaced; ordering without "
                  "'replaces'", level="warning")
    with translated(action, url):
        return client.new_order(csr, profile=profile), None


def fetch_renewal_info(config: Config, cert: x509.Certificate,
                       now: dt.datetime | None = None) -> RenewalInfo | None:
    """The CA's renewalInfo for ``cert`` (RFC 9773), or None when its directory has none."""
    net = make_network(config.acme)
    client = AriClient(get_directory(config.acme, net), net)
    with translated("read the CA's renewal information", config.acme.directory):
        return client.renewal_info(cert, now)


def issue_certificate(config: Config, state: StateDir, cert_key: PrivateKey,
                      reporter: Reporter, replaces: str | None = None) -> IssuedCertificate:
    """Run one ACME order for config.host.names + addresses with ``cert_key``.

    ``replaces`` is the ARI id of the certificate this one renews; it is sent only when the
    CA offers ARI, and dropped (once) if the CA answers ``alreadyReplaced``.
    Raises AcmeError (ChallengeError for validation problems, DnsUpdateError for dns-01
    publishing problems) with a one-line message; never leaves challenge files, responders
    or TXT records behind.
    """
    acme = config.acme
    net = make_network(acme)
    directory = get_directory(acme, net)
    client = AriClient(directory, net)
    account = ensure_account(acme, state, client, reporter)
    profile = order.choose_profile(acme.profile, directory, reporter)
    if not client.supports_ari():
        replaces = None

    identifiers = [*config.host.names, *config.host.addresses]
    csr = make_csr(config, cert_key)
    action = f"create an order for {', '.join(identifiers)}"
    orderr, replaces = order_replacing(client, csr, profile, replaces, action, reporter)
    deadline = order.order_deadline(acme.order_timeout)
    reporter.step("order", f"order created for {', '.join(identifiers)}", order=orderr.uri,
                  identifiers=identifiers, profile=profile, replaces=replaces)

    tasks = order.tasks_for(orderr, config.challenge.type, account.key)
    if tasks:
        with order.challenge_setup(config.challenge, tasks, reporter, state):
            order.answer_and_wait(client, tasks, deadline, reporter, config.challenge.type)
    else:
        reporter.step("validated", "every identifier is already authorized (reused)")

    fullchain = order.finalize_and_download(client, orderr, deadline, reporter)
    issued = parse_chain(fullchain.encode("ascii"), cert_key)
    reporter.step("issued", "certificate issued", serial=f"{issued.cert.serial_number:x}",
                  not_after=issued.cert.not_valid_after_utc.isoformat(),
                  chain_length=len(issued.chain))
    return issued
