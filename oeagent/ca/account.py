"""The ACME account: one per CA directory, found again rather than duplicated.

On disk (``state.account_dir(directory)``, all 0600): ``key.pem`` (ECDSA P-256, ES256) and
``account.json`` (directory, account URL, contact). The key is written BEFORE registering, and
account.json after: if a run dies in between, the next run still has the key, asks the CA
for the account that key already owns (``onlyReturnExisting``) and converges, instead of
creating a second account (Let's Encrypt allows only 10 new accounts per IP per 3 hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import b64
from josepy.jwk import JWKEC

from oeagent.ca.client import problem_text, translated
from oeagent.config import AcmeConfig
from oeagent.errors import AcmeError
from oeagent.keys import generate_key, key_to_pem, load_key_pem
from oeagent.report import Reporter
from oeagent.state import StateDir


@dataclass(frozen=True)
class Account:
    url: str
    key: JWKEC
    created: bool
    """False when the CA already knew the key's account."""


def load_or_create_key(state: StateDir, directory_url: str) -> tuple[JWKEC, bool]:
    """The account key for this CA and whether it was just generated."""
    path = state.account_dir(directory_url) / "key.pem"
    pem = state.read_bytes(path)
    if pem is not None:
        key = load_key_pem(pem, what=f"ACME account key {path}")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise AcmeError(f"the ACME account key {path} is not an ECDSA P-256 key")
        return JWKEC(key=key), False
    new = generate_key("ecdsa-p256")
    state.write_bytes(path, key_to_pem(new))  # 0600, atomic
    return JWKEC(key=new), True


def ensure_account(config: AcmeConfig, state: StateDir, client: acme_client.ClientV2,
                   reporter: Reporter) -> Account:
    """Give ``client.net`` our account key and URL: reuse, find again, or register."""
    directory_url = config.directory
    key, key_is_new = load_or_create_key(state, directory_url)
    client.net.key = key
    record_path = state.account_dir(directory_url) / "account.json"
    record = state.read_json(record_path)

    # A key we already had may own an account even if account.json was never written.
    if not key_is_new:
        existing = _find_existing(client, record, state.account_dir(directory_url))
        if existing is not None:
            if record is None or record.get("url") != existing.uri:
                _save(state, record_path, directory_url, existing)
            reporter.step("account", "using the existing ACME account", url=existing.uri,
                          directory=directory_url)
            return Account(existing.uri, key, created=False)

    regr = _register(config, client)
    _save(state, record_path, directory_url, regr)
    reporter.step("account", "created an ACME account", url=regr.uri, directory=directory_url,
                  contact=list(regr.body.contact))
    return Account(regr.uri, key, created=True)


def _find_existing(client: acme_client.ClientV2, record: dict[str, Any] | None,
                   where: Path) -> messages.RegistrationResource | None:
    """Ask the CA which account our key owns (RFC 8555 §7.3.1 onlyReturnExisting).

    One request even when account.json is there: it proves the account still exists and is
    usable (a reset test CA, a deactivated account) before we build an order on it.
    """
    contact = record.get("contact") if record else None
    body = messages.Registration(
        contact=tuple(str(c) for c in contact) if isinstance(contact, list) else ()
    )
    probe = messages.RegistrationResource(uri=str(record.get("url", "")) if record else "",
                                          body=body)
    with translated("look up the ACME account", client.directory["newAccount"]):
        try:
            return client.query_registration(probe)
        except messages.Error as exc:
            if exc.code == "accountDoesNotExist":
                return None  # e.g. a test CA was reset: register again with this key
            if exc.code == "unauthorized" and "deactivated" in str(exc.detail):
                # Final at the CA (RFC 8555 §7.3.6): only a new key makes a new account.
                raise AcmeError(
                    f"cannot use the ACME account: the CA said: {problem_text(exc)}; the "
                    f"account of the key in {where} is deactivated for good: move that "
                    "directory aside and run again to register a new account",
                    code=exc.code) from None
            raise
def _register(config: AcmeConfig, client: acme_client.ClientV2) -> messages.RegistrationResource:
    meta = client.directory.meta
    tos = meta.terms_of_service
    if tos and not config.agree_tos:
        raise AcmeError(
            f"the CA requires agreeing to its terms of service at {tos}; "
            "read them and set acme.agree_tos = true"
        )
    eab = None
    if config.eab_kid and config.eab_hmac_key is not None:
        assert client.net.key is not None
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=client.net.key.public_key(),
            kid=config.eab_kid,
            hmac_key=b64.b64encode(config.eab_hmac_key.reveal()).decode("ascii"),
            directory=client.directory,
        )
    elif meta.external_account_required:
        raise AcmeError(
            f"the CA at {config.directory} requires External Account Binding: "
            "set acme.eab_kid and acme.eab_hmac_key_file"
        )
    new = messages.NewRegistration.from_data(
        email=config.email, terms_of_service_agreed=(bool(tos) and config.agree_tos) or None,
        external_account_binding=eab,
    )
    try:
        with translated("register an ACME account", client.directory["newAccount"]):
            try:
                return client.new_account(new)
            except acme_errors.ConflictError as conflict:
                # The key already owns an account (another run won a race): adopt it.
                existing = messages.RegistrationResource(uri=conflict.location, body=new)
                return client.query_registration(existing)
    except AcmeError as exc:
        if eab is None or exc.code not in ("unauthorized", "malformed", "badPublicKey"):
            raise
        # The CA's words ("JWS verification error") do not say which setting is wrong.
        assert config.eab_hmac_key is not None
        raise AcmeError(
            f"{exc}; the CA did not accept the External Account Binding: check acme.eab_kid "
            f"({config.eab_kid}) and the HMAC key in {config.eab_hmac_key.source}",
            code=exc.code, retry_after=exc.retry_after) from None


def _save(state: StateDir, path: Path, directory_url: str,
          regr: messages.RegistrationResource) -> None:
    state.write_json(path, {
        "directory": directory_url,
        "url": regr.uri,
        "contact": list(regr.body.contact),
    })
